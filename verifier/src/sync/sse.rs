//! An incremental parser of `text/event-stream` (the WHATWG HTML "Server-sent
//! events" interpretation rules), fed with whatever chunks the network hands
//! over.
//!
//! It handles the three line endings (CRLF, LF, CR, including a CRLF split
//! across two chunks), a leading byte-order mark, comments, multi-line
//! `data`, and the `id` field; `retry` is ignored (the sync task has its own
//! backoff). A line longer than [`MAX_LINE_BYTES`] is an error, so a
//! misbehaving server cannot make the verifier buffer without bound.

/// The longest line accepted; status events are well under 200 bytes.
pub(crate) const MAX_LINE_BYTES: usize = 64 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SseEvent {
    /// The `event` field, or `"message"` when absent.
    pub event: String,
    /// The `data` lines joined by `\n`.
    pub data: String,
    /// The last event id in effect when this event was dispatched.
    pub id: Option<String>,
}

/// The stream broke a limit; the connection should be dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// Parser state carried between chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF in the next one belongs
    /// to the same line ending.
    after_cr: bool,
    /// Whether the first bytes (and a possible BOM) have been seen.
    started: bool,
    event: String,
    data: String,
    has_data: bool,
    last_id: Option<String>,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Feeds one chunk and returns the events it completed, in order.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) -> Result<Vec<SseEvent>, LineTooLong> {
        let mut events = Vec::new();
        if !self.started {
            // The BOM may itself be split across chunks; wait for 3 bytes.
            let have = self.line.len() + chunk.len();
            if have < BOM.len() && BOM.starts_with(&[self.line.as_slice(), chunk].concat()) {
                self.line.extend_from_slice(chunk);
                return Ok(events);
            }
            self.started = true;
            let mut head = std::mem::take(&mut self.line);
            head.extend_from_slice(chunk);
            let rest = head.strip_prefix(BOM).unwrap_or(&head).to_vec();
            return self.feed_bytes(&rest, &mut events).map(|()| events);
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.feed_bytes(chunk, &mut events)?;
        Ok(events)
    }

    fn feed_bytes(&mut self, bytes: &[u8], events: &mut Vec<SseEvent>) -> Result<(), LineTooLong> {
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = rest.split_at(pos);
            if self.line.len() + head.len() > MAX_LINE_BYTES {
                return Err(LineTooLong);
            }
            self.line.extend_from_slice(head);
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, events);
            self.line = line;
            self.line.clear();
            rest = match tail {
                [b'\r', b'\n', after @ ..] => after,
                [b'\r'] => {
                    self.after_cr = true;
                    &[]
                }
                [_, after @ ..] => after,
                [] => &[],
            };
        }
        if self.line.len() + rest.len() > MAX_LINE_BYTES {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(rest);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(events);
            return;
        }
        if line[0] == b':' {
            return; // a comment, e.g. `: keep-alive`
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
                self.has_data = true;
            }
            b"id" if !value.contains('\0') => self.last_id = Some(value.into_owned()),
            _ => {} // `retry` and unknown fields are ignored
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        events.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.last_id.clone(),
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ev(event: &str, data: &str, id: Option<&str>) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.map(Into::into),
        }
    }

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c).unwrap());
        }
        out
    }

    const STREAM: &str = "event: ready\ndata: {\"seq\": 4}\n\n: keep-alive\n\nid: 5\nevent: status\ndata: {\"seq\":5,\"list\":0,\"idx\":3,\"status\":1}\n\n";

    fn expected() -> Vec<SseEvent> {
        vec![
            ev("ready", "{\"seq\": 4}", None),
            ev(
                "status",
                "{\"seq\":5,\"list\":0,\"idx\":3,\"status\":1}",
                Some("5"),
            ),
        ]
    }

    #[test]
    fn whole_stream() {
        assert_eq!(parse_all(&[STREAM.as_bytes()]), expected());
    }

    #[test]
    fn every_split_point_gives_the_same_events() {
        let bytes = STREAM.as_bytes();
        for cut in 0..=bytes.len() {
            assert_eq!(
                parse_all(&[&bytes[..cut], &bytes[cut..]]),
                expected(),
                "cut at {cut}"
            );
        }
        // One byte at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_all(&singles), expected());
    }

    #[test]
    fn line_endings() {
        for ending in ["\n", "\r\n", "\r"] {
            let text = STREAM.replace('\n', ending);
            let bytes = text.as_bytes();
            assert_eq!(parse_all(&[bytes]), expected(), "{ending:?}");
            for cut in 0..=bytes.len() {
                assert_eq!(
                    parse_all(&[&bytes[..cut], &bytes[cut..]]),
                    expected(),
                    "{ending:?} cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn bom_is_skipped_even_when_split() {
        let mut text = BOM.to_vec();
        text.extend_from_slice(STREAM.as_bytes());
        for cut in 0..6 {
            assert_eq!(
                parse_all(&[&text[..cut], &text[cut..]]),
                expected(),
                "{cut}"
            );
        }
        // Short first chunks that are not a BOM prefix are parsed as usual.
        assert_eq!(
            parse_all(&[b"d", b"a", b"ta: x\n\n"]),
            vec![ev("message", "x", None)]
        );
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let events = parse_all(&[
            b"data: one\ndata:two\ndata\n: comment\nretry: 10\nunknown: x\n\n",
            b"event: e\n\n",    // no data: not dispatched
            b"data: three\n\n", // event type was reset
        ]);
        assert_eq!(
            events,
            vec![
                ev("message", "one\ntwo\n", None),
                ev("message", "three", None)
            ]
        );
    }

    #[test]
    fn id_persists_and_ignores_nul() {
        let events =
            parse_all(&[b"id: 7\ndata: a\n\ndata: b\n\nid: x\0y\ndata: c\n\nid\ndata: d\n\n"]);
        assert_eq!(
            events,
            vec![
                ev("message", "a", Some("7")),
                ev("message", "b", Some("7")),
                ev("message", "c", Some("7")),
                ev("message", "d", Some("")),
            ]
        );
    }

    #[test]
    fn unterminated_event_is_not_dispatched() {
        assert!(parse_all(&[b"data: half"]).is_empty());
        assert!(parse_all(&[b"data: half\n"]).is_empty());
    }

    #[test]
    fn long_lines_are_refused() {
        let mut p = SseParser::new();
        let long = vec![b'a'; MAX_LINE_BYTES + 1];
        assert_eq!(p.feed(b"data: ").map(|e| e.len()), Ok(0));
        assert_eq!(p.feed(&long), Err(LineTooLong));
        let mut p = SseParser::new();
        let mut line = b"data: ".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES));
        line.push(b'\n');
        assert_eq!(p.feed(&line), Err(LineTooLong));
    }
}
