-- Chat throughput (issue 19): the next unfinished event of one lane (a
-- chat) is found through its own index entries. `inbox_state` (source,
-- state, seq) has no lane, so finding a chat's next update read every
-- pending update of the bot: with a backlog of thousands, each read grew
-- with the backlog and the bot fell further behind.
CREATE INDEX inbox_lane ON inbox (source, lane, state, seq);
