//! Where a status slot is published: slot `s` is entry `s % capacity` of
//! list `s / capacity`, at `{issuer}/v1/status/{list}`. The one place that
//! maps slots to list URIs and back.

use latchkey_verifier::StatusListRef;

#[derive(Debug, Clone)]
pub struct StatusLists {
    /// `{issuer}/v1/status/`.
    prefix: String,
    capacity: u64,
}

impl StatusLists {
    pub fn new(issuer: &str, capacity: u64) -> StatusLists {
        StatusLists {
            prefix: format!("{}/v1/status/", issuer.trim_end_matches('/')),
            capacity,
        }
    }

    /// Entries per list.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The URI of list `list`.
    pub fn uri(&self, list: u64) -> String {
        format!("{}{list}", self.prefix)
    }

    /// Where `slot` lives: (list number, index in the list).
    pub fn locate(&self, slot: u64) -> (u64, u64) {
        (slot / self.capacity, slot % self.capacity)
    }

    /// The reference a token carries for `slot`.
    pub fn reference(&self, slot: u64) -> StatusListRef {
        let (list, idx) = self.locate(slot);
        StatusListRef {
            idx,
            uri: self.uri(list),
        }
    }

    /// The slot a token's reference points to, if its list is one of ours.
    pub fn slot_of(&self, reference: &StatusListRef) -> Option<u64> {
        let list: u64 = reference.uri.strip_prefix(&self.prefix)?.parse().ok()?;
        if reference.idx >= self.capacity {
            return None;
        }
        list.checked_mul(self.capacity)?.checked_add(reference.idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_and_references_map_both_ways() {
        let lists = StatusLists::new("https://issuer.example/", 16);
        let reference = lists.reference(37);
        assert_eq!(reference.uri, "https://issuer.example/v1/status/2");
        assert_eq!(reference.idx, 5);
        assert_eq!(lists.slot_of(&reference), Some(37));
        let foreign = StatusListRef {
            idx: 1,
            uri: "https://other.example/v1/status/0".into(),
        };
        assert_eq!(lists.slot_of(&foreign), None);
        let beyond = StatusListRef {
            idx: 16,
            uri: lists.uri(0),
        };
        assert_eq!(lists.slot_of(&beyond), None);
    }
}
