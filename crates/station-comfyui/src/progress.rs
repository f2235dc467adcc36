//! One progress figure per prompt.

use std::collections::HashSet;

use crate::socket::PromptEvent;

/// Turns a prompt's events into a monotonic fraction in [0, 1]:
/// (nodes done + the running node's value/max) / nodes to run, with cached nodes done.
#[derive(Debug, Clone)]
pub struct ProgressTracker {
    total: usize,
    done: HashSet<String>,
    current: Option<(String, f64)>,
    last: f64,
}

impl ProgressTracker {
    /// A tracker for a prompt that runs `total_nodes` nodes (at least 1 is assumed).
    pub fn new(total_nodes: usize) -> ProgressTracker {
        ProgressTracker { total: total_nodes.max(1), done: HashSet::new(), current: None, last: 0.0 }
    }

    /// A tracker for every node of `graph`.
    pub fn for_graph(graph: &crate::protocol::Graph) -> ProgressTracker {
        Self::new(graph.len())
    }

    /// The current fraction.
    pub fn fraction(&self) -> f64 {
        self.last
    }

    /// Feeds one event; returns the (never decreasing) fraction.
    pub fn observe(&mut self, event: &PromptEvent) -> f64 {
        match event {
            PromptEvent::Cached { nodes } => self.done.extend(nodes.iter().cloned()),
            PromptEvent::Executing { node } => {
                if let Some((prev, _)) = self.current.take()
                    && prev != *node
                {
                    self.done.insert(prev);
                }
                self.current = Some((node.clone(), 0.0));
            }
            PromptEvent::Progress { node, value, max } if *max > 0.0 => {
                let frac = (value / max).clamp(0.0, 1.0);
                match (&mut self.current, node) {
                    (Some((cur, f)), Some(n)) if cur == n => *f = frac,
                    (Some((_, f)), None) => *f = frac,
                    (_, Some(n)) => self.current = Some((n.clone(), frac)),
                    (None, None) => {}
                }
            }
            PromptEvent::ProgressState { nodes } => {
                for (id, p) in nodes {
                    if p.state == "finished" {
                        self.done.insert(id.clone());
                    }
                }
            }
            PromptEvent::Executed { node, .. } => {
                self.done.insert(node.clone());
            }
            PromptEvent::Success | PromptEvent::Finished => {
                self.last = 1.0;
                return 1.0;
            }
            _ => {}
        }
        let running = match &self.current {
            Some((id, f)) if !self.done.contains(id) => *f,
            _ => 0.0,
        };
        let raw = ((self.done.len() as f64 + running) / self.total as f64).min(1.0);
        self.last = self.last.max(raw);
        self.last
    }
}
