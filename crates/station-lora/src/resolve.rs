//! Rewriting a prompt's trigger words into ComfyUI `<lora:SLUG:WEIGHT>` tags.
//!
//! See [`resolve`] for the rules.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::record::{Access, LoraRecord, is_compatible};

/// One LoRA that the resolved prompt applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    /// Slug of the LoRA.
    pub slug: String,
    /// Weight it is applied with.
    pub weight: f64,
    /// The prompt text that applied it, as typed: the trigger word or cognate (without any
    /// weight suffix), or the whole inline tag.
    pub matched: String,
}

/// The outcome of [`resolve`]; this exact shape is printed by the CLI and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolution {
    /// The rewritten prompt.
    pub prompt: String,
    /// LoRAs applied, in prompt order; each slug appears at most once.
    pub applied: Vec<Applied>,
    /// Human-readable notes: removed inline tags first, then tags kept as plain text and
    /// trigger conflicts, in prompt order.
    pub warnings: Vec<String>,
}

impl Resolution {
    /// `(filename, weight)` of each applied LoRA, in order, ready for
    /// [`inject_loras`](crate::inject_loras); `catalog` must be the one passed to [`resolve`].
    ///
    /// Applied slugs missing from `catalog` (impossible with the same catalog) are skipped.
    pub fn loader_inputs<'c>(&self, catalog: &'c [LoraRecord]) -> Vec<(&'c str, f64)> {
        self.applied
            .iter()
            .filter_map(|a| {
                let rec = catalog.iter().find(|r| r.slug == a.slug)?;
                Some((rec.filename.as_str(), a.weight))
            })
            .collect()
    }
}

/// Weight step of one `.` or `!` written after a trigger, in hundredths.
const SHIFT_STEP: i64 = 20;
/// Highest weight a trigger can ask for, in hundredths.
const MAX_WEIGHT: i64 = 200;
/// Characters that form a weight-shift run after a trigger; only runs made entirely of `.`
/// or entirely of `!` shift the weight, other runs are ordinary punctuation.
const RUN_CHARS: &[char] = &['.', '!', '?', ',', ';', ':'];

/// Rewrites the trigger words in `prompt` into `<lora:SLUG:WEIGHT>` tags for the LoRAs that
/// `account` may use with a tool built on `tool_base_model`.
///
/// # Rules
///
/// - **Visibility.** Public LoRAs are usable by everyone; private ones only by their owner and
///   by accounts holding a grant that is neither revoked nor expired at `now_ms`. Without an
///   account only public LoRAs are usable. Unusable LoRAs are invisible: their triggers are
///   plain text.
/// - **Compatibility.** With `tool_base_model` set, LoRAs whose checkpoint is not
///   [`is_compatible`] are ignored as if absent.
/// - **Matching.** Trigger words and cognates match case-insensitively on whole words. A word
///   character is a Unicode letter or digit, `-`, `_` or a combining accent (U+0300–U+036F);
///   anything else (whitespace, `. , ! ? ( ) [ ] { } ' "`, but also `; : / # …`) separates
///   words. So `milady-style`, `milady2` and `émilady` do not match `milady`, while
///   `milady;`, `#milady` and `(milady)` do, keeping the surrounding characters. A boundary
///   is only required where the trigger itself starts or ends with a word character. A trigger
///   of several words matches the same words separated by exactly one whitespace character
///   each. Where several triggers match at one place the longest wins. Text without spaces
///   (e.g. Chinese) therefore only matches where a separator surrounds the trigger.
/// - **Output.** A match becomes `<lora:SLUG:WEIGHT>` immediately followed by the LoRA's
///   trigger word in lower case: the matched trigger itself, or for a cognate the LoRA's
///   first trigger word (the cognate itself when the LoRA has no trigger words). A word
///   starting with `lorahash_` is not emitted, only the tag. Everything else is untouched.
///   Weights print in shortest form (`1`, `0.8`, `1.15`).
/// - **Weights.** `word:0.5` or `word:.4` gives the weight explicitly (the suffix is consumed;
///   it must be followed by a non-word character or the end). Otherwise the LoRA's default
///   weight (1.0 when unset) is shifted by −0.2 per `.` and +0.2 per `!` written directly
///   after the word, when that punctuation run is all dots or all bangs (it is consumed; a
///   sentence-ending `.` counts too). Mixed runs such as `!?` or `.,` are kept and do not
///   shift. All weights are rounded to 2 decimals and clamped to [0, 2]. A weight of 0 means
///   "do not apply": that occurrence stays exactly as typed and counts for nothing.
/// - **Once per LoRA.** The first occurrence with a non-zero weight applies the LoRA; later
///   occurrences of any of its triggers or cognates are removed together with their weight
///   suffix. Removal collapses the whitespace it would leave: between two whitespace runs one
///   is dropped (the one without a line break, preferring the following one), a space before
///   `, . ! ? ; : ) ] }` or the end is dropped, and a space after `( [ {` or the start is
///   dropped. Nothing else changes, except that a space replaces a removed inline tag that
///   sat between two word characters. Inline tags are removed before triggers are matched,
///   and a tag that such removals join together (`<lora:x` + `:1>`) is judged like any
///   other; one joined by removing triggers is removed, with a warning.
/// - **Inline tags.** `<lora:slug:weight>` (no `<` or `>` inside, no spaces around the slug
///   or weight) already in the prompt is kept verbatim and counts as applied (with its weight
///   as written, unclamped) when the slug (case-insensitive) names a usable, compatible LoRA;
///   then every trigger of that LoRA
///   elsewhere in the prompt is removed, except the trigger word written directly after the
///   tag, which is kept so that resolving a resolved prompt changes nothing. A tag naming an
///   unknown or unusable LoRA, an incompatible one, or a LoRA already applied by an earlier
///   tag is removed with a warning (unknown and private-without-access give the same warning,
///   so private slugs are not revealed). A tag whose weight is not a decimal number, or that
///   lacks the weight, stays as plain text with a warning. Tag text is never matched as words.
/// - **Conflicts.** When several usable LoRAs share a trigger or cognate, the account's own
///   private LoRA wins, then one granted to it, then public ones; within a group the most
///   recently updated wins (ties: smallest slug). When more than one public LoRA was a
///   candidate, one warning per trigger names all candidates and the one used.
///
/// Resolving an already resolved prompt returns the same prompt.
pub fn resolve(
    prompt: &str,
    catalog: &[LoraRecord],
    account: Option<&str>,
    tool_base_model: Option<&str>,
    now_ms: i64,
) -> Resolution {
    let index = Index::build(catalog, account, tool_base_model, now_ms);
    let ctx = TagContext { index: &index, catalog, account, tool_base_model, now_ms };
    let (text, warnings) = strip_tags(prompt, &ctx);
    let mut applied_loras = HashSet::new();
    let tags = ctx.classify(&text, &mut applied_loras);
    Resolver {
        prompt: &text,
        index: &index,
        out: String::with_capacity(text.len() + 64),
        applied: Vec::new(),
        warnings,
        applied_loras,
        winners: HashMap::new(),
        known_spans: Vec::new(),
    }
    .run(&tags)
}

/// Removes the inline tags that must go, repeating while removals join text into new tags,
/// so that trigger matching (and any later resolution) sees the text that will be output.
fn strip_tags(prompt: &str, ctx: &TagContext<'_, '_>) -> (String, Vec<String>) {
    let mut text = prompt.to_owned();
    let mut warnings = Vec::new();
    loop {
        let tags = ctx.classify(&text, &mut HashSet::new());
        if !tags.iter().any(|t| matches!(t.action, TagAction::Remove(_))) {
            return (text, warnings);
        }
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        for tag in tags {
            let TagAction::Remove(warning) = tag.action else {
                continue;
            };
            out.push_str(&text[i..tag.start]);
            warnings.push(warning);
            i = tag.end + collapse_removal(&mut out, &text[tag.end..]);
            // A tag separates words; removing it must not glue `foo` and `bar` together.
            let glued =
                out.chars().next_back().is_some_and(is_word_char) && text[i..].chars().next().is_some_and(is_word_char);
            if glued {
                out.push(' ');
            }
        }
        out.push_str(&text[i..]);
        text = out;
    }
}

/// Drops a removed piece of text: `out` holds the text before the hole, `rest` the text
/// after it. Collapses the whitespace the hole leaves (see [`resolve`]) and returns how many
/// bytes of `rest` to skip.
fn collapse_removal(out: &mut String, rest: &str) -> usize {
    let right_ws = rest.len() - rest.trim_start().len();
    let left_ws = out.len() - out.trim_end().len();
    if left_ws > 0 && right_ws > 0 {
        let left_has_newline = out[out.len() - left_ws..].contains('\n');
        let right_has_newline = rest[..right_ws].contains('\n');
        if right_has_newline && !left_has_newline {
            out.truncate(out.len() - left_ws);
            return 0;
        }
        return right_ws;
    }
    if left_ws > 0 {
        let closes =
            rest.chars().next().is_none_or(|c| matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | ')' | ']' | '}'));
        if closes {
            out.truncate(out.len() - left_ws);
        }
        return 0;
    }
    if right_ws > 0 {
        let opens = out.chars().next_back().is_none_or(|c| matches!(c, '(' | '[' | '{'));
        if opens {
            return right_ws;
        }
    }
    0
}

/// True for characters that continue a word (see the matching rule of [`resolve`]).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_' || ('\u{300}'..='\u{36f}').contains(&c)
}

/// A trigger as written back into prompts: trimmed, inner whitespace runs as one space,
/// lower case.
fn display_form(word: &str) -> String {
    word.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Case-folds one character for matching.
///
/// Per character (not `str::to_lowercase`, whose final-sigma rule depends on context) and
/// with `ς` folded to `σ`, so that `ΟΔΟΣ` matches a trigger written `οδος`.
fn fold(c: char) -> impl Iterator<Item = char> {
    c.to_lowercase().map(|l| if l == 'ς' { 'σ' } else { l })
}

/// Matching key of a trigger: its [`display_form`], case-folded.
fn match_key(word: &str) -> String {
    display_form(word).chars().flat_map(fold).collect()
}

/// Formats a weight given in hundredths in shortest form (`1`, `0.8`, `1.15`).
fn format_weight(hundredths: i64) -> String {
    // f64 Display prints the shortest text that round-trips, and never a trailing `.0`.
    format!("{}", hundredths as f64 / 100.0)
}

/// Rounds to hundredths and clamps into [0, 2]; NaN becomes 0.
fn to_hundredths(weight: f64) -> i64 {
    if weight.is_nan() {
        return 0;
    }
    ((weight * 100.0).round().clamp(0.0, MAX_WEIGHT as f64)) as i64
}

/// Index key of folded text: its leading run of word characters, or its first character
/// when that is not a word character.
///
/// A phrase can only match where the prompt's key equals the phrase's key, which keeps
/// lookups to a handful of candidates even with thousands of triggers sharing a first letter.
fn lead_key(mut folded: impl Iterator<Item = char>) -> String {
    match folded.next() {
        None => String::new(),
        Some(c) if !is_word_char(c) => c.to_string(),
        Some(c) => std::iter::once(c).chain(folded.take_while(|&c| is_word_char(c))).collect(),
    }
}

/// A usable, compatible LoRA.
struct Usable<'a> {
    rec: &'a LoraRecord,
    access: Access,
    /// Trigger words in catalog order: (matching key, display form).
    triggers: Vec<(String, String)>,
}

/// One distinct trigger or cognate (by matching key) and the LoRAs it names.
struct Phrase {
    /// Matching key (see [`match_key`]).
    text: String,
    /// Display form of the first word seen with this key, emitted for cognates of LoRAs
    /// without trigger words.
    display: String,
    chars: Vec<char>,
    /// Indexes into `Index::usable`, deduplicated.
    loras: Vec<usize>,
}

/// The catalog seen by one account and tool, prepared for matching.
struct Index<'a> {
    usable: Vec<Usable<'a>>,
    phrases: Vec<Phrase>,
    /// Phrase ids by their [`lead_key`].
    by_lead: HashMap<String, Vec<usize>>,
}

impl<'a> Index<'a> {
    fn build(catalog: &'a [LoraRecord], account: Option<&str>, tool_base_model: Option<&str>, now_ms: i64) -> Self {
        let usable: Vec<Usable<'a>> = catalog
            .iter()
            .filter(|r| tool_base_model.is_none_or(|base| is_compatible(base, &r.checkpoint)))
            .filter_map(|rec| {
                let access = rec.access(account, now_ms)?;
                let triggers = rec
                    .trigger_words
                    .iter()
                    .map(|w| (match_key(w), display_form(w)))
                    .filter(|(key, _)| !key.is_empty())
                    .collect();
                Some(Usable { rec, access, triggers })
            })
            .collect();
        let mut phrases: Vec<Phrase> = Vec::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (u, lora) in usable.iter().enumerate() {
            for word in lora.rec.trigger_words.iter().chain(&lora.rec.cognates) {
                let text = match_key(word);
                // A trigger that spells a tag would let plain text smuggle a tag in.
                if text.is_empty() || text.contains("<lora:") {
                    continue;
                }
                let id = *ids.entry(text.clone()).or_insert_with(|| {
                    phrases.push(Phrase {
                        chars: text.chars().collect(),
                        display: display_form(word),
                        text,
                        loras: Vec::new(),
                    });
                    phrases.len() - 1
                });
                if !phrases[id].loras.contains(&u) {
                    phrases[id].loras.push(u);
                }
            }
        }
        let mut by_lead: HashMap<String, Vec<usize>> = HashMap::new();
        for (id, p) in phrases.iter().enumerate() {
            by_lead.entry(lead_key(p.chars.iter().copied())).or_default().push(id);
        }
        Index { usable, phrases, by_lead }
    }

    /// The best usable LoRA with this slug, if any.
    fn by_slug(&self, slug: &str) -> Option<usize> {
        (0..self.usable.len())
            .filter(|&u| self.usable[u].rec.slug.eq_ignore_ascii_case(slug))
            .min_by_key(|&u| self.rank(u))
    }

    /// Conflict order: access group, then newest first, then slug.
    fn rank(&self, u: usize) -> (Access, Reverse<i64>, &str) {
        let l = &self.usable[u];
        (l.access, Reverse(l.rec.updated_at), l.rec.slug.as_str())
    }

    /// The word written after the tag when phrase `phrase_id` applied LoRA `u`, or `None` for tag only.
    fn emitted_word(&self, u: usize, phrase_id: usize) -> Option<&str> {
        let lora = &self.usable[u];
        let phrase = &self.phrases[phrase_id];
        let own = lora.triggers.iter().find(|(key, _)| *key == phrase.text);
        let word = match own.or(lora.triggers.first()) {
            Some((_, display)) => display.as_str(),
            None => phrase.display.as_str(),
        };
        (!word.starts_with("lorahash_")).then_some(word)
    }

    /// Where `phrase` ends when it matches `prompt` at byte `at`, reading no further than
    /// `limit`.
    fn match_at(prompt: &str, at: usize, limit: usize, phrase: &Phrase) -> Option<usize> {
        let want = &phrase.chars;
        let mut k = 0;
        let mut pos = at;
        for c in prompt[at..limit].chars() {
            if k == want.len() {
                break;
            }
            if want[k] == ' ' {
                if !c.is_whitespace() {
                    return None;
                }
                k += 1;
            } else {
                for lc in fold(c) {
                    if want.get(k) != Some(&lc) {
                        return None;
                    }
                    k += 1;
                }
            }
            pos += c.len_utf8();
        }
        (k == want.len()).then_some(pos)
    }

    /// The longest phrase matching at byte `at` on word boundaries: `(phrase id, end)`.
    fn best_match(&self, prompt: &str, at: usize, limit: usize, prev: Option<char>) -> Option<(usize, usize)> {
        let first = prompt[at..].chars().next()?;
        // Candidates start with a word character exactly when `first` is one, so inside a
        // word none of them can match.
        if is_word_char(first) && prev.is_some_and(is_word_char) {
            return None;
        }
        let key = lead_key(prompt[at..limit].chars().flat_map(fold));
        let mut best: Option<(usize, usize)> = None;
        for &id in self.by_lead.get(&key)? {
            let phrase = &self.phrases[id];
            let Some(end) = Self::match_at(prompt, at, limit, phrase) else {
                continue;
            };
            let next_is_word = prompt[end..].chars().next().is_some_and(is_word_char);
            if next_is_word && phrase.chars.last().copied().is_some_and(is_word_char) {
                continue;
            }
            if best.is_none_or(|(_, e)| end > e) {
                best = Some((id, end));
            }
        }
        best
    }
}

/// How a weight was written after a trigger.
enum WeightSuffix {
    /// `:0.5` — explicit weight.
    Explicit(f64),
    /// A run of `n` bangs (positive) or dots (negative).
    Shift(i64),
    /// Nothing that changes the weight.
    None,
}

/// Reads a decimal number `\d+(\.\d+)?|\.\d+` at the start of `s`, returning its length.
fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let int = digits(0);
    if b.get(int) == Some(&b'.') {
        let frac = digits(int + 1);
        if frac > 0 {
            return int + 1 + frac;
        }
    }
    int
}

/// Parses the weight syntax directly after a trigger; returns it and how many bytes it spans.
fn parse_suffix(rest: &str) -> (WeightSuffix, usize) {
    let ends_word = |at: usize| !rest[at..].chars().next().is_some_and(is_word_char);
    if let Some(after_colon) = rest.strip_prefix(':') {
        let n = number_len(after_colon);
        if n > 0
            && ends_word(1 + n)
            && let Ok(w) = after_colon[..n].parse::<f64>()
        {
            return (WeightSuffix::Explicit(w), 1 + n);
        }
    }
    let run_len = rest.chars().take_while(|c| RUN_CHARS.contains(c)).count();
    // RUN_CHARS are ASCII, so chars == bytes here.
    let run = &rest[..run_len];
    if run_len > 0 && ends_word(run_len) {
        if run.bytes().all(|b| b == b'.') {
            return (WeightSuffix::Shift(-(run_len as i64)), run_len);
        }
        if run.bytes().all(|b| b == b'!') {
            return (WeightSuffix::Shift(run_len as i64), run_len);
        }
    }
    (WeightSuffix::None, 0)
}

/// What to do with one inline tag found in the prompt.
enum TagAction {
    /// Keep it; it applies usable LoRA `u` with `weight`.
    Keep { u: usize, weight: f64 },
    /// Remove it, with a warning.
    Remove(String),
    /// Leave it as plain text, with a warning.
    Plain(String),
}

/// One `<lora:…>` span in the prompt.
struct Tag {
    start: usize,
    end: usize,
    action: TagAction,
}

/// Is `s` a decimal number with an optional sign, as accepted in inline tags?
fn is_tag_weight(s: &str) -> bool {
    let unsigned = s.strip_prefix(['-', '+']).unwrap_or(s);
    !unsigned.is_empty() && number_len(unsigned) == unsigned.len()
}

/// Finds `<lora:…>` spans: `<lora:` (any case) followed by text without `<` or `>`, then `>`.
fn find_tags(prompt: &str) -> Vec<(usize, usize)> {
    let bytes = prompt.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while let Some(off) = prompt[i..].find('<') {
        let start = i + off;
        i = start + 1;
        if !bytes[start + 1..].get(..5).is_some_and(|s| s.eq_ignore_ascii_case(b"lora:")) {
            continue;
        }
        let body_from = start + 6;
        match prompt[body_from..].find(['<', '>']) {
            Some(rel) if bytes[body_from + rel] == b'>' => {
                let end = body_from + rel + 1;
                spans.push((start, end));
                i = end;
            }
            _ => {}
        }
    }
    spans
}

struct Resolver<'p, 'i, 'a> {
    prompt: &'p str,
    index: &'i Index<'a>,
    out: String,
    applied: Vec<Applied>,
    warnings: Vec<String>,
    /// Usable LoRAs already applied (or about to be, by a kept inline tag).
    applied_loras: HashSet<usize>,
    /// Winning LoRA per phrase id, decided on first use.
    winners: HashMap<usize, usize>,
    /// Byte ranges in `out` of the `<lora:…>` spans this resolution wrote or kept (including
    /// those kept as plain text).
    known_spans: Vec<(usize, usize)>,
}

/// What [`TagContext::classify`] needs to judge inline tags.
struct TagContext<'i, 'a> {
    index: &'i Index<'a>,
    catalog: &'a [LoraRecord],
    account: Option<&'a str>,
    tool_base_model: Option<&'a str>,
    now_ms: i64,
}

impl TagContext<'_, '_> {
    /// Decides every inline tag of `prompt`; LoRAs of kept tags go into `applied`, and a
    /// second tag for one of them is removed.
    fn classify(&self, prompt: &str, applied: &mut HashSet<usize>) -> Vec<Tag> {
        let (catalog, account, tool_base_model, now_ms) =
            (self.catalog, self.account, self.tool_base_model, self.now_ms);
        let mut tags = Vec::new();
        for (start, end) in find_tags(prompt) {
            let text = &prompt[start..end];
            let body = &prompt[start + 6..end - 1];
            let action = match body.split_once(':') {
                None => TagAction::Plain(format!("kept {text} as plain text: expected <lora:slug:weight>")),
                Some((_, weight)) if !is_tag_weight(weight) => {
                    TagAction::Plain(format!("kept {text} as plain text: weight {weight:?} is not a number"))
                }
                Some((slug, weight)) => {
                    let weight: f64 = weight.parse().unwrap_or(0.0);
                    match self.index.by_slug(slug) {
                        Some(u) if applied.contains(&u) => {
                            TagAction::Remove(format!("removed {text}: LoRA {slug:?} is already applied"))
                        }
                        Some(u) => {
                            applied.insert(u);
                            TagAction::Keep { u, weight }
                        }
                        None => {
                            let visible_elsewhere = catalog
                                .iter()
                                .find(|r| r.slug.eq_ignore_ascii_case(slug) && r.is_visible_to(account, now_ms));
                            match (visible_elsewhere, tool_base_model) {
                                (Some(r), Some(base)) => TagAction::Remove(format!(
                                    "removed {text}: LoRA {slug:?} is for {} and this tool uses {base}",
                                    r.checkpoint
                                )),
                                _ => TagAction::Remove(format!("removed {text}: no LoRA {slug:?} is available")),
                            }
                        }
                    }
                }
            };
            tags.push(Tag { start, end, action });
        }
        tags
    }
}

impl Resolver<'_, '_, '_> {
    /// The trigger pass over the prompt, whose inline tags are already decided in `tags`.
    fn run(mut self, tags: &[Tag]) -> Resolution {
        let prompt = self.prompt;
        let mut next_tag = 0;
        let mut i = 0;
        let mut prev: Option<char> = None;
        // The LoRA of a kept tag ending exactly at `i`.
        let mut after_tag: Option<usize> = None;
        while i < prompt.len() {
            if let Some(tag) = tags.get(next_tag).filter(|t| t.start == i) {
                next_tag += 1;
                let text = &prompt[tag.start..tag.end];
                after_tag = None;
                match &tag.action {
                    TagAction::Keep { u, weight } => {
                        self.known_spans.push((self.out.len(), self.out.len() + text.len()));
                        self.out.push_str(text);
                        self.applied.push(Applied {
                            slug: self.index.usable[*u].rec.slug.clone(),
                            weight: *weight,
                            matched: text.to_owned(),
                        });
                        after_tag = Some(*u);
                        i = tag.end;
                    }
                    TagAction::Plain(w) => {
                        self.known_spans.push((self.out.len(), self.out.len() + text.len()));
                        self.out.push_str(text);
                        self.warnings.push(w.clone());
                        i = tag.end;
                    }
                    TagAction::Remove(w) => {
                        self.warnings.push(w.clone());
                        i = self.remove(tag.end);
                    }
                }
                prev = prompt[..i].chars().next_back();
                continue;
            }
            let limit = tags.get(next_tag).map_or(prompt.len(), |t| t.start);
            if let Some((id, end)) = self.index.best_match(prompt, i, limit, prev) {
                let follows_own_tag = after_tag.take().is_some_and(|u| self.index.phrases[id].loras.contains(&u));
                i = if follows_own_tag {
                    // The word a previous resolution wrote after its tag: leave it alone.
                    self.out.push_str(&prompt[i..end]);
                    end
                } else {
                    self.apply(id, i, end)
                };
                prev = prompt[..i].chars().next_back();
                continue;
            }
            after_tag = None;
            let c = prompt[i..].chars().next().expect("i is inside the prompt");
            self.out.push(c);
            prev = Some(c);
            i += c.len_utf8();
        }
        self.drop_formed_tags();
        Resolution { prompt: self.out, applied: self.applied, warnings: self.warnings }
    }

    /// Removes `<lora:…>` spans that removals created by joining the text around them (such
    /// as `<lora:secret` + `:1>` once `<lora:gone:1>` between them is dropped): they were not
    /// in the prompt, so they were never checked. Repeats because each cut can join again.
    fn drop_formed_tags(&mut self) {
        loop {
            let formed: Vec<(usize, usize)> =
                find_tags(&self.out).into_iter().filter(|span| !self.known_spans.contains(span)).collect();
            if formed.is_empty() {
                return;
            }
            for &(start, end) in &formed {
                self.warnings
                    .push(format!("removed {}: it was formed by removing text inside it", &self.out[start..end]));
            }
            // Back to front, so the offsets still to cut stay valid.
            for &(start, end) in formed.iter().rev() {
                self.out.replace_range(start..end, "");
                for tag in &mut self.known_spans {
                    if tag.0 >= end {
                        tag.0 -= end - start;
                        tag.1 -= end - start;
                    }
                }
            }
        }
    }

    /// Decides the winner for a phrase, warning once about public conflicts.
    fn winner(&mut self, id: usize) -> usize {
        if let Some(&u) = self.winners.get(&id) {
            return u;
        }
        let index = self.index;
        let phrase = &index.phrases[id];
        let u = *phrase.loras.iter().min_by_key(|&&u| index.rank(u)).expect("every phrase names at least one LoRA");
        let public = phrase.loras.iter().filter(|&&c| index.usable[c].access == Access::Public).count();
        if public > 1 {
            let mut names: Vec<&str> = phrase.loras.iter().map(|&c| index.usable[c].rec.slug.as_str()).collect();
            names.sort_unstable();
            self.warnings.push(format!(
                "trigger {:?} matches several LoRAs ({}); using {}",
                phrase.text,
                names.join(", "),
                index.usable[u].rec.slug
            ));
        }
        self.winners.insert(id, u);
        u
    }

    /// Handles the phrase `id` matched at `start..end`; returns where to continue.
    fn apply(&mut self, id: usize, start: usize, end: usize) -> usize {
        let u = self.winner(id);
        let lora = &self.index.usable[u];
        let (suffix, suffix_len) = parse_suffix(&self.prompt[end..]);
        let default = to_hundredths(lora.rec.effective_default_weight());
        let weight = match suffix {
            WeightSuffix::Explicit(w) => to_hundredths(w),
            WeightSuffix::Shift(n) => (default + SHIFT_STEP * n).clamp(0, MAX_WEIGHT),
            WeightSuffix::None => default,
        };
        let stop = end + suffix_len;
        if weight == 0 {
            self.out.push_str(&self.prompt[start..stop]);
            return stop;
        }
        if self.applied_loras.contains(&u) {
            return self.remove(stop);
        }
        self.applied_loras.insert(u);
        let tag_start = self.out.len();
        self.out.push_str("<lora:");
        self.out.push_str(&lora.rec.slug);
        self.out.push(':');
        self.out.push_str(&format_weight(weight));
        self.out.push('>');
        self.known_spans.push((tag_start, self.out.len()));
        if let Some(word) = self.index.emitted_word(u, id) {
            self.out.push_str(word);
        }
        self.applied.push(Applied {
            slug: lora.rec.slug.clone(),
            weight: weight as f64 / 100.0,
            matched: self.prompt[start..end].to_owned(),
        });
        stop
    }

    /// Drops the prompt text before `after` (already skipped by the caller), collapsing the
    /// whitespace left around the hole; returns where to continue.
    fn remove(&mut self, after: usize) -> usize {
        after + collapse_removal(&mut self.out, &self.prompt[after..])
    }
}

#[cfg(test)]
mod tests;
