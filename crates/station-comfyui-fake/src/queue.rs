//! The pending queue as the real `PromptQueue` keeps it: a binary heap (Python's `heapq`) of
//! `(number, prompt_id, …)` tuples.
//!
//! The smallest number runs first, so prompts run in submission order unless a client sends
//! `front: true` (a negative number) or its own `number`. `GET /queue` shows the heap's array as
//! is — sorted for plain FIFO use, heap-ordered otherwise — and deleting an item re-heapifies,
//! exactly like `heapq`, so listings match a real server item for item.

use std::cmp::Ordering;

use crate::state::QueueItem;

/// Pending prompts in `heapq` order.
#[derive(Debug, Default)]
pub(crate) struct PromptHeap {
    items: Vec<QueueItem>,
}

/// Python's tuple order on `(number, prompt_id)`.
fn less(a: &QueueItem, b: &QueueItem) -> bool {
    let (x, y) = (a.number_f64(), b.number_f64());
    match x.partial_cmp(&y) {
        Some(Ordering::Less) => true,
        Some(Ordering::Equal) => a.prompt_id < b.prompt_id,
        _ => false,
    }
}

impl PromptHeap {
    /// `heapq.heappush`.
    pub fn push(&mut self, item: QueueItem) {
        self.items.push(item);
        let last = self.items.len() - 1;
        self.sift_down(0, last);
    }

    /// `heapq.heappop`.
    pub fn pop(&mut self) -> Option<QueueItem> {
        let last = self.items.pop()?;
        if self.items.is_empty() {
            return Some(last);
        }
        let top = std::mem::replace(&mut self.items[0], last);
        self.sift_up(0);
        Some(top)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Items in the heap's array order (what `GET /queue` shows).
    pub fn iter(&self) -> impl Iterator<Item = &QueueItem> {
        self.items.iter()
    }

    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// `PromptQueue.delete_queue_item`: removes the first item whose id is `prompt_id` and
    /// re-heapifies. Returns how many `status` updates the real server sends for it: 0 when not
    /// found, 2 when it was the last item (it wipes the queue, then reports again), else 1.
    pub fn delete(&mut self, prompt_id: &str) -> usize {
        let Some(at) = self.items.iter().position(|i| i.prompt_id == prompt_id) else {
            return 0;
        };
        if self.items.len() == 1 {
            self.items.clear();
            return 2;
        }
        self.items.remove(at);
        self.heapify();
        1
    }

    fn heapify(&mut self) {
        for i in (0..self.items.len() / 2).rev() {
            self.sift_up(i);
        }
    }

    /// `heapq._siftdown`: moves the item at `pos` up towards `start`.
    fn sift_down(&mut self, start: usize, mut pos: usize) {
        while pos > start {
            let parent = (pos - 1) >> 1;
            if less(&self.items[pos], &self.items[parent]) {
                self.items.swap(pos, parent);
                pos = parent;
            } else {
                break;
            }
        }
    }

    /// `heapq._siftup`: sends the item at `pos` to a leaf along smaller children, then back up.
    fn sift_up(&mut self, mut pos: usize) {
        let end = self.items.len();
        let start = pos;
        let mut child = 2 * pos + 1;
        while child < end {
            let right = child + 1;
            if right < end && !less(&self.items[child], &self.items[right]) {
                child = right;
            }
            self.items.swap(pos, child);
            pos = child;
            child = 2 * pos + 1;
        }
        self.sift_down(start, pos);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Number};

    use super::*;

    fn item(n: f64, id: &str) -> QueueItem {
        QueueItem {
            number: Number::from_f64(n).unwrap(),
            prompt_id: id.into(),
            graph: Map::new(),
            extra_data: Map::new(),
            outputs: vec![],
        }
    }

    fn ids(h: &PromptHeap) -> Vec<&str> {
        h.iter().map(|i| i.prompt_id.as_str()).collect()
    }

    #[test]
    fn behaves_like_heapq() {
        // Python: h=[]; for n in [5,3,8,1,4]: heappush(h,(n,str(n))) -> [1,3,8,5,4]
        let mut h = PromptHeap::default();
        for n in [5.0, 3.0, 8.0, 1.0, 4.0] {
            h.push(item(n, &n.to_string()));
        }
        assert_eq!(ids(&h), ["1", "3", "8", "5", "4"]);
        // Python: h.pop(1); heapify(h) -> [1,4,5,8]
        assert_eq!(h.delete("3"), 1);
        assert_eq!(ids(&h), ["1", "4", "5", "8"]);
        let order: Vec<String> = std::iter::from_fn(|| h.pop()).map(|i| i.prompt_id).collect();
        assert_eq!(order, ["1", "4", "5", "8"]);
        h.push(item(1.0, "only"));
        assert_eq!(h.delete("missing"), 0);
        assert_eq!(h.delete("only"), 2);
        assert_eq!(h.len(), 0);
    }
}
