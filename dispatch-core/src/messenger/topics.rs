//! The receiving side's state of every topic in this process: its subscribers, its latest
//! retained value, and the messages waiting for a first subscriber, within their byte budgets.

use super::subscription::Delivery;
use super::UNCLAIMED_LIMIT;
use crate::settings::DataBudgets;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One topic's subscribers and what waits for them.
#[derive(Debug, Default)]
pub(super) struct TopicState {
    pub(super) subscribers: Vec<mpsc::UnboundedSender<Arc<Delivery>>>,
    pub(super) unclaimed: VecDeque<Arc<Delivery>>,
    /// What `unclaimed` holds, counted by [`held`].
    pub(super) unclaimed_bytes: usize,
    /// The latest retained value.
    pub(super) latest: Option<Arc<Delivery>>,
}

/// Every topic of this process, and the budget of the messages waiting for a first subscriber
/// (issue 12): per topic and in total, in bytes, and a cap on the number of such topics. A
/// message past a budget is dropped, counted, and summed up in a warning at most once a second.
#[derive(Debug)]
pub(super) struct Topics {
    pub(super) map: HashMap<String, TopicState>,
    pub(super) budgets: UnclaimedBudgets,
    /// Bytes held by every topic's `unclaimed`.
    pub(super) unclaimed_bytes: usize,
    /// Topics whose `unclaimed` is not empty.
    pub(super) unclaimed_topics: usize,
    /// Messages dropped since the process started.
    pub(super) dropped: u64,
    /// Dropped since the last warning, and their bytes.
    pub(super) dropped_unreported: (u64, usize),
    pub(super) last_warning: Option<Instant>,
}

/// The limits of [`Topics`]' unclaimed messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnclaimedBudgets {
    pub(super) topic_bytes: usize,
    pub(super) bytes: usize,
    pub(super) topics: usize,
}

impl From<&DataBudgets> for UnclaimedBudgets {
    fn from(b: &DataBudgets) -> Self {
        UnclaimedBudgets {
            topic_bytes: b.unclaimed_topic_bytes,
            bytes: b.unclaimed_bytes,
            topics: b.unclaimed_topics.max(1),
        }
    }
}

/// What a message held for a subscriber costs: its payload, its topic's name, and the
/// bookkeeping around them.
pub(super) fn held(topic: &str, delivery: &Delivery) -> usize {
    delivery.payload.len() + topic.len() + 64
}

/// The most often a drop of unclaimed messages is logged.
pub(super) const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(1);

impl Topics {
    pub(super) fn new(budgets: UnclaimedBudgets) -> Self {
        Topics {
            map: HashMap::new(),
            budgets,
            unclaimed_bytes: 0,
            unclaimed_topics: 0,
            dropped: 0,
            dropped_unreported: (0, 0),
            last_warning: None,
        }
    }

    /// Keeps `delivery` for `topic`'s first subscriber, within the budgets: the topic's oldest
    /// messages make room for it first; if it still does not fit (the total, or the number of
    /// topics, is spent by other topics) it is dropped.
    pub(super) fn hold(&mut self, topic: &str, delivery: Arc<Delivery>) {
        let size = held(topic, &delivery);
        let b = self.budgets;
        let Some(state) = self.map.get_mut(topic) else {
            return;
        };
        let mut freed = (0_u64, 0_usize);
        while !state.unclaimed.is_empty()
            && (state.unclaimed.len() >= UNCLAIMED_LIMIT
                || state.unclaimed_bytes + size > b.topic_bytes
                || self.unclaimed_bytes + size > b.bytes)
        {
            if let Some(old) = state.unclaimed.pop_front() {
                let old_size = held(topic, &old);
                state.unclaimed_bytes -= old_size;
                self.unclaimed_bytes -= old_size;
                freed.0 += 1;
                freed.1 += old_size;
            }
        }
        let new_topic = state.unclaimed.is_empty();
        if new_topic && freed.0 > 0 {
            self.unclaimed_topics -= 1;
        }
        let fits = size <= b.topic_bytes
            && self.unclaimed_bytes + size <= b.bytes
            && (!new_topic || self.unclaimed_topics < b.topics);
        if fits {
            state.unclaimed_bytes += size;
            state.unclaimed.push_back(delivery);
            self.unclaimed_bytes += size;
            if new_topic {
                self.unclaimed_topics += 1;
            }
        } else {
            freed.0 += 1;
            freed.1 += size;
        }
        if state.unclaimed.is_empty() && state.subscribers.is_empty() && state.latest.is_none() {
            self.map.remove(topic);
        }
        if freed.0 > 0 {
            self.dropped(topic, freed);
        }
    }

    /// Counts dropped messages; warns at most once per [`DROP_WARNING_INTERVAL`].
    pub(super) fn dropped(&mut self, topic: &str, (messages, bytes): (u64, usize)) {
        self.dropped += messages;
        self.dropped_unreported.0 += messages;
        self.dropped_unreported.1 += bytes;
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < DROP_WARNING_INTERVAL)
        {
            return;
        }
        self.last_warning = Some(now);
        let (n, size) = std::mem::take(&mut self.dropped_unreported);
        let b = self.budgets;
        tracing::warn!(
            topic,
            dropped_total = self.dropped,
            "dropped {n} messages ({size} bytes) that no subscriber had claimed, the last on              topic `{topic}`: waiting messages may hold {} bytes per topic and {} bytes in {}              topics (held now: {} bytes in {} topics). Subscribe to the topic (Messenger::on)              before messages arrive, or raise Cluster::unclaimed_bytes",
            b.topic_bytes,
            b.bytes,
            b.topics,
            self.unclaimed_bytes,
            self.unclaimed_topics
        );
    }

    /// Hands `state`'s waiting messages over (its first subscriber takes them): they no longer
    /// count against the budget.
    pub(super) fn claim(&mut self, topic: &str) -> VecDeque<Arc<Delivery>> {
        let Some(state) = self.map.get_mut(topic) else {
            return VecDeque::new();
        };
        if !state.unclaimed.is_empty() {
            self.unclaimed_topics -= 1;
        }
        self.unclaimed_bytes -= std::mem::take(&mut state.unclaimed_bytes);
        std::mem::take(&mut state.unclaimed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;

    fn delivery(len: usize) -> Arc<Delivery> {
        Arc::new(Delivery {
            from: 1,
            version: 0,
            payload: ByteBuf::from(vec![0; len]),
        })
    }

    fn hold(topics: &mut Topics, topic: &str, len: usize) {
        topics.map.entry(topic.to_owned()).or_default();
        topics.hold(topic, delivery(len));
    }

    /// Issue 12, row 5, in one process: per topic and in total in bytes, and the number of
    /// topics; the oldest of a topic make room for its newest; a late subscriber gets what was
    /// kept, and the budget is free again.
    #[test]
    fn unclaimed_messages_stay_within_their_budgets() {
        let mut topics = Topics::new(UnclaimedBudgets {
            topic_bytes: 10_000,
            bytes: 25_000,
            topics: 3,
        });
        let size = held("a", &delivery(1000));
        for _ in 0..100 {
            hold(&mut topics, "a", 1000);
        }
        assert_eq!(topics.map["a"].unclaimed.len(), 10_000 / size);
        assert_eq!(topics.dropped, 100 - (10_000 / size) as u64);
        // Other topics share the total.
        for t in ["b", "c"] {
            for _ in 0..100 {
                hold(&mut topics, t, 1000);
            }
        }
        assert!(
            topics.unclaimed_bytes <= 25_000,
            "{}",
            topics.unclaimed_bytes
        );
        // A fourth topic is over the cap on topics: dropped, and not kept in the map.
        hold(&mut topics, "d", 10);
        assert!(!topics.map.contains_key("d"));
        assert_eq!(topics.unclaimed_topics, 3);
        // The first subscriber claims what was kept; the budget is free again.
        let kept = topics.claim("a").len();
        assert_eq!(kept, 10_000 / size);
        hold(&mut topics, "d", 10);
        assert_eq!(topics.map["d"].unclaimed.len(), 1);
        // Larger than a topic may hold: dropped.
        hold(&mut topics, "e", 20_000);
        assert!(!topics.map.contains_key("e"));
        let total: usize = topics.map.values().map(|s| s.unclaimed_bytes).sum();
        assert_eq!(total, topics.unclaimed_bytes);
    }
}
