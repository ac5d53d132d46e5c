//! The Token Status List (draft-ietf-oauth-status-list): the data structure
//! and its wire encoding (contract §4).
//!
//! A status list is a byte array in which every referenced token owns
//! [`STATUS_BITS`] bits. Entry `i` lives in byte `i * bits / 8`, at bit offset
//! `(i * bits) % 8` counted from the least significant bit. On the wire the
//! array is compressed with DEFLATE in the ZLIB format (RFC 1950) at the
//! highest compression level and carried, base64url-encoded without padding,
//! as `lst`.
//!
//! latchkey writes 2 bits per token (`0` valid, `1` invalid, `2` suspended).
//! The issuer keeps one [`StatusList`] per published list in memory, calls
//! [`StatusList::set`] (O(1)) on every change, and re-encodes with
//! [`StatusList::encode_lst`] when a request arrives after a change.
//! Verifiers turn a fetched `lst` back into a list with [`StatusList::decode`].

use std::fmt;
use std::io::{self, Read, Write};

use base64::Engine as _;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use flate2::Compression;
use flate2::bufread::ZlibDecoder;
use flate2::write::ZlibEncoder;
use serde::{Deserialize, Serialize};

use crate::claims::TokenStatus;

/// Bits per token in every list latchkey publishes.
pub const STATUS_BITS: u8 = 2;

/// The JOSE `typ` header of a signed status list.
pub const STATUS_LIST_JWT_TYP: &str = "statuslist+jwt";

/// The media type of a signed status list (a JWT).
pub const STATUS_LIST_JWT_MEDIA_TYPE: &str = "application/statuslist+jwt";

/// The media type of an unsigned status list (JSON).
pub const STATUS_LIST_JSON_MEDIA_TYPE: &str = "application/statuslist+json";

/// The most bytes [`StatusList::decode`] will inflate (16 MiB, i.e. 64 Mi
/// entries at 2 bits). A larger list is refused rather than risk a zip bomb.
pub const MAX_DECOMPRESSED_LEN: usize = 16 * 1024 * 1024;

/// Entries per byte at [`STATUS_BITS`] bits per entry.
const PER_BYTE: usize = 8 / STATUS_BITS as usize;

/// Mask of one entry's bits.
const MASK: u8 = (1 << STATUS_BITS) - 1;

/// Decodes `lst` with or without `=` padding (the draft says without; being
/// lenient about padding alone costs nothing and helps interoperability).
const LST_DECODER: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What can go wrong building, changing or decoding a status list.
#[derive(Debug, thiserror::Error)]
pub enum StatusListError {
    /// [`StatusList::set`] with an index at or past the list's capacity.
    #[error("status list index {idx} is out of range (capacity {capacity})")]
    OutOfRange { idx: usize, capacity: usize },
    /// `bits` is not one of the sizes the draft allows (1, 2, 4 or 8).
    #[error("status list `bits` must be 1, 2, 4 or 8, got {0}")]
    InvalidBits(u8),
    /// A size the draft allows but this codec does not read.
    #[error(
        "status lists with {0} bits per token are not supported: only {STATUS_BITS} (what latchkey publishes) is"
    )]
    UnsupportedBits(u8),
    /// `lst` is not base64url.
    #[error("status list `lst` is not valid base64url")]
    Base64(#[source] base64::DecodeError),
    /// `lst` does not hold a valid zlib stream.
    #[error("status list `lst` is not a valid zlib stream")]
    Zlib(#[source] io::Error),
    /// Bytes follow the end of the zlib stream.
    #[error("status list `lst` has data after the end of its zlib stream")]
    TrailingData,
    /// The list inflates to more than [`MAX_DECOMPRESSED_LEN`] bytes.
    #[error("status list inflates to more than {limit} bytes")]
    TooLarge { limit: usize },
}

/// A fixed-capacity list of 2-bit token statuses, packed as the draft lays
/// them out.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusList {
    bytes: Vec<u8>,
    capacity: usize,
}

impl fmt::Debug for StatusList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The byte array can be megabytes long; it is not worth printing.
        f.debug_struct("StatusList")
            .field("capacity", &self.capacity)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

impl StatusList {
    /// A list of `capacity` entries, all [`TokenStatus::Valid`].
    pub fn new(capacity: usize) -> StatusList {
        StatusList {
            bytes: vec![0; capacity.div_ceil(PER_BYTE)],
            capacity,
        }
    }

    /// A list over an already packed byte array (for example one kept in
    /// storage); its capacity is every entry the bytes hold.
    pub fn from_bytes(bytes: Vec<u8>) -> StatusList {
        let capacity = bytes.len().saturating_mul(PER_BYTE);
        StatusList { bytes, capacity }
    }

    /// How many entries the list holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The packed byte array, exactly as it is compressed into `lst`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The raw 2-bit value of entry `idx` (`3` is application specific in
    /// the draft), or `None` past the capacity.
    pub fn raw(&self, idx: usize) -> Option<u8> {
        if idx >= self.capacity {
            return None;
        }
        let byte = self.bytes.get(idx / PER_BYTE)?;
        Some((byte >> shift(idx)) & MASK)
    }

    /// The status of entry `idx`, or `None` past the capacity. A raw `3`
    /// reads as [`TokenStatus::Invalid`] (fail closed, see
    /// [`TokenStatus::from_bits`]).
    pub fn get(&self, idx: usize) -> Option<TokenStatus> {
        self.raw(idx).map(TokenStatus::from_bits)
    }

    /// Sets entry `idx` to `status` in O(1); returns whether the entry
    /// changed, so the caller knows if its encoded form is stale.
    pub fn set(&mut self, idx: usize, status: TokenStatus) -> Result<bool, StatusListError> {
        let capacity = self.capacity;
        let out_of_range = StatusListError::OutOfRange { idx, capacity };
        if idx >= capacity {
            return Err(out_of_range);
        }
        let byte = self.bytes.get_mut(idx / PER_BYTE).ok_or(out_of_range)?;
        let shift = shift(idx);
        let new = status.bits() & MASK;
        if (*byte >> shift) & MASK == new {
            return Ok(false);
        }
        *byte = (*byte & !(MASK << shift)) | (new << shift);
        Ok(true)
    }

    /// How many entries read as `status` (a raw `3` counts as invalid).
    pub fn count(&self, status: TokenStatus) -> usize {
        let full = self.capacity / PER_BYTE;
        let (head, tail) = self.bytes.split_at(full.min(self.bytes.len()));
        let mut n = 0;
        for &byte in head {
            if byte == 0 {
                // The common case: four valid tokens.
                if status == TokenStatus::Valid {
                    n += PER_BYTE;
                }
                continue;
            }
            n += (0..PER_BYTE)
                .filter(|&slot| {
                    TokenStatus::from_bits(byte >> (slot * STATUS_BITS as usize)) == status
                })
                .count();
        }
        if let Some(&byte) = tail.first() {
            n += (0..self.capacity % PER_BYTE)
                .filter(|&slot| {
                    TokenStatus::from_bits(byte >> (slot * STATUS_BITS as usize)) == status
                })
                .count();
        }
        n
    }

    /// The byte array compressed with DEFLATE in the ZLIB format (RFC 1950)
    /// at the highest compression level, as the draft asks.
    pub fn compressed(&self) -> Vec<u8> {
        let mut encoder = ZlibEncoder::new(
            Vec::with_capacity(self.bytes.len() / 16 + 64),
            Compression::best(),
        );
        match encoder
            .write_all(&self.bytes)
            .and_then(|()| encoder.finish())
        {
            Ok(out) => out,
            // Compressing into a Vec cannot fail; should the backend ever
            // report an error anyway, publish the same bytes uncompressed
            // rather than panic: still a valid zlib stream.
            Err(_) => stored_zlib(&self.bytes),
        }
    }

    /// The `lst` value: [`compressed`](Self::compressed), base64url without padding.
    pub fn encode_lst(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.compressed())
    }

    /// Reads a list from its `bits` and `lst`. Only `bits == 2` is read;
    /// any other value is an error ([`StatusListError::InvalidBits`] if the
    /// draft does not allow it, [`StatusListError::UnsupportedBits`] if it
    /// does). Inflating past [`MAX_DECOMPRESSED_LEN`] bytes is refused.
    pub fn decode(bits: u8, lst: &str) -> Result<StatusList, StatusListError> {
        match bits {
            STATUS_BITS => {}
            1 | 4 | 8 => return Err(StatusListError::UnsupportedBits(bits)),
            _ => return Err(StatusListError::InvalidBits(bits)),
        }
        Ok(StatusList::from_bytes(inflate(lst)?))
    }
}

/// Bit offset of entry `idx` within its byte.
fn shift(idx: usize) -> usize {
    (idx % PER_BYTE) * STATUS_BITS as usize
}

/// base64url-decodes and inflates `lst`, refusing more than
/// [`MAX_DECOMPRESSED_LEN`] bytes of output and anything after the stream.
fn inflate(lst: &str) -> Result<Vec<u8>, StatusListError> {
    let compressed = LST_DECODER.decode(lst).map_err(StatusListError::Base64)?;
    let mut decoder = ZlibDecoder::new(compressed.as_slice());
    let mut out = Vec::new();
    let limit = MAX_DECOMPRESSED_LEN as u64 + 1;
    decoder
        .by_ref()
        .take(limit)
        .read_to_end(&mut out)
        .map_err(StatusListError::Zlib)?;
    if out.len() > MAX_DECOMPRESSED_LEN {
        return Err(StatusListError::TooLarge {
            limit: MAX_DECOMPRESSED_LEN,
        });
    }
    // The decoder consumes its input only up to the end of the stream.
    if !decoder.get_ref().is_empty() {
        return Err(StatusListError::TrailingData);
    }
    Ok(out)
}

/// `bytes` as a zlib stream of stored (uncompressed) DEFLATE blocks.
fn stored_zlib(bytes: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 0xFFFF;
    let blocks = bytes.len().div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(bytes.len() + blocks * 5 + 6);
    // CMF: deflate, 32 KiB window; FLG: fastest level, check bits so that
    // CMF * 256 + FLG is a multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = bytes.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xFF, 0xFF]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u8::from(chunks.peek().is_none());
        // Chunks are at most 0xFFFF bytes, so the length fits in a u16.
        let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&adler32(bytes).to_be_bytes());
    out
}

/// The Adler-32 checksum (RFC 1950 §9) that ends a zlib stream.
fn adler32(bytes: &[u8]) -> u32 {
    const MOD: u32 = 65521;
    let (mut a, mut b) = (1u32, 0u32);
    // 5552 is the most bytes that cannot overflow `b` before reducing.
    for chunk in bytes.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// The `status_list` claim of a status list token: `bits`, `lst` and the
/// optional `aggregation_uri`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListPayload {
    pub bits: u8,
    pub lst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregation_uri: Option<String>,
}

impl StatusListPayload {
    /// The payload of `list`: `bits` = [`STATUS_BITS`] and its encoded `lst`.
    pub fn from_list(list: &StatusList) -> StatusListPayload {
        StatusListPayload {
            bits: STATUS_BITS,
            lst: list.encode_lst(),
            aggregation_uri: None,
        }
    }

    /// The list this payload carries ([`StatusList::decode`]).
    pub fn decode(&self) -> Result<StatusList, StatusListError> {
        StatusList::decode(self.bits, &self.lst)
    }
}

/// The payload of a `statuslist+jwt`, and the body of the unsigned
/// `application/statuslist+json` form. `sub` is the list's URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusListClaims {
    pub sub: String,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Seconds a fetched list may be cached before it is fetched again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// latchkey: the push-stream sequence number of the last change this
    /// list includes. A verifier never installs a list older than a change
    /// it has already applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// latchkey: the name of the sequence space `seq` counts in (it changes
    /// only if the issuer's sequence starts over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    pub status_list: StatusListPayload,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests fail loudly by design
mod tests {
    use super::*;

    /// xorshift64: a small deterministic PRNG for test data.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    /// A list of `capacity` entries with exactly `revoked` of them invalid,
    /// at pseudo-random positions.
    fn revoked_list(capacity: usize, revoked: usize, seed: u64) -> StatusList {
        let mut list = StatusList::new(capacity);
        let mut rng = XorShift(seed);
        let mut done = 0;
        while done < revoked {
            let idx = (rng.next() % capacity as u64) as usize;
            if list.set(idx, TokenStatus::Invalid).unwrap() {
                done += 1;
            }
        }
        list
    }

    fn deflate(bytes: &[u8]) -> Vec<u8> {
        let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    // draft-ietf-oauth-status-list, "Status List in JSON Format", bits = 2:
    // status[0]=1 [1]=2 [2]=0 [3]=3 [4]=0 [5]=1 [6]=0 [7]=1 [8]=1 [9]=2
    // [10]=3 [11]=3 → byte array c9 44 f9 → lst "eNo76fITAAPfAgc".
    const DRAFT_2BIT_LST: &str = "eNo76fITAAPfAgc";
    const DRAFT_2BIT_BYTES: [u8; 3] = [0xC9, 0x44, 0xF9];
    const DRAFT_2BIT_STATUSES: [u8; 12] = [1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3];

    // The draft's 1-bit example: 16 entries → b9 a3 → "eNrbuRgAAhcBXQ".
    const DRAFT_1BIT_LST: &str = "eNrbuRgAAhcBXQ";
    const DRAFT_1BIT_STATUSES: [u8; 16] = [1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1];

    #[test]
    fn draft_2bit_vector_decodes() {
        let list = StatusList::decode(2, DRAFT_2BIT_LST).unwrap();
        assert_eq!(list.as_bytes(), DRAFT_2BIT_BYTES);
        assert_eq!(list.capacity(), 12);
        for (idx, &want) in DRAFT_2BIT_STATUSES.iter().enumerate() {
            assert_eq!(list.raw(idx), Some(want), "entry {idx}");
            assert_eq!(list.get(idx), Some(TokenStatus::from_bits(want)));
        }
        // 3 is application specific: it fails closed.
        assert_eq!(list.get(3), Some(TokenStatus::Invalid));
        assert_eq!(list.get(1), Some(TokenStatus::Suspended));
        assert_eq!(list.get(12), None);
    }

    #[test]
    fn draft_2bit_vector_round_trips() {
        let list = StatusList::from_bytes(DRAFT_2BIT_BYTES.to_vec());
        let lst = list.encode_lst();
        // Best compression writes the FLEVEL=3 zlib header 78 da ("eNo").
        assert!(lst.starts_with("eNo"), "{lst}");
        assert_eq!(StatusList::decode(2, &lst).unwrap(), list);
        // flate2's backends (miniz_oxide, zlib-rs) reproduce zlib's output
        // for this input, so the draft's exact string comes back.
        assert_eq!(lst, DRAFT_2BIT_LST);
    }

    #[test]
    fn draft_2bit_vector_built_with_set() {
        // Build the draft's list entry by entry (3 has no TokenStatus, so
        // those entries are written as raw bytes afterwards) and check the
        // packing bit for bit.
        let mut list = StatusList::new(12);
        for (idx, &s) in DRAFT_2BIT_STATUSES.iter().enumerate() {
            if s != 3 {
                list.set(idx, TokenStatus::from_bits(s)).unwrap();
            }
        }
        // Entries 3, 10, 11 (value 3) are the only difference.
        let mut want = DRAFT_2BIT_BYTES;
        want[0] &= !(0b11 << 6);
        want[2] &= !(0b11 << 4 | 0b11 << 6);
        assert_eq!(list.as_bytes(), want);
    }

    #[test]
    fn draft_1bit_vector_layout_and_refusal() {
        // The pipeline (base64url, zlib) and LSB-first layout, checked on
        // the draft's 1-bit example; decode itself refuses 1-bit lists.
        let bytes = inflate(DRAFT_1BIT_LST).unwrap();
        assert_eq!(bytes, [0xB9, 0xA3]);
        for (idx, &want) in DRAFT_1BIT_STATUSES.iter().enumerate() {
            assert_eq!((bytes[idx / 8] >> (idx % 8)) & 1, want, "entry {idx}");
        }
        assert!(matches!(
            StatusList::decode(1, DRAFT_1BIT_LST),
            Err(StatusListError::UnsupportedBits(1))
        ));
    }

    #[test]
    fn bit_layout_is_lsb_first() {
        let mut list = StatusList::new(8);
        list.set(0, TokenStatus::Invalid).unwrap();
        assert_eq!(list.as_bytes(), [0b0000_0001, 0]);
        list.set(1, TokenStatus::Suspended).unwrap();
        assert_eq!(list.as_bytes(), [0b0000_1001, 0]);
        list.set(3, TokenStatus::Invalid).unwrap();
        assert_eq!(list.as_bytes(), [0b0100_1001, 0]);
        list.set(4, TokenStatus::Suspended).unwrap();
        assert_eq!(list.as_bytes(), [0b0100_1001, 0b0000_0010]);
        list.set(7, TokenStatus::Suspended).unwrap();
        assert_eq!(list.as_bytes(), [0b0100_1001, 0b1000_0010]);
        // Overwriting clears the old bits and leaves neighbours alone.
        list.set(1, TokenStatus::Invalid).unwrap();
        assert_eq!(list.as_bytes(), [0b0100_0101, 0b1000_0010]);
        list.set(3, TokenStatus::Valid).unwrap();
        assert_eq!(list.as_bytes(), [0b0000_0101, 0b1000_0010]);
    }

    #[test]
    fn get_set_at_boundaries() {
        for capacity in [1, 3, 4, 5, 8, 1_000_001] {
            let mut list = StatusList::new(capacity);
            assert_eq!(list.capacity(), capacity);
            assert_eq!(list.as_bytes().len(), capacity.div_ceil(4));
            let last = capacity - 1;
            for status in [
                TokenStatus::Suspended,
                TokenStatus::Invalid,
                TokenStatus::Valid,
            ] {
                for idx in [0, last] {
                    list.set(idx, status).unwrap();
                    assert_eq!(list.get(idx), Some(status), "cap {capacity} idx {idx}");
                }
            }
            assert_eq!(list.get(capacity), None);
            assert_eq!(list.raw(capacity), None);
            assert_eq!(list.count(TokenStatus::Valid), capacity);
        }
    }

    #[test]
    fn set_out_of_range_is_an_error() {
        let mut list = StatusList::new(5);
        for idx in [5, 6, 8, usize::MAX] {
            match list.set(idx, TokenStatus::Invalid) {
                Err(StatusListError::OutOfRange {
                    idx: i,
                    capacity: 5,
                }) => assert_eq!(i, idx),
                other => panic!("idx {idx}: {other:?}"),
            }
            assert_eq!(list.get(idx), None);
        }
        // The padding bits of the last byte stay untouched.
        assert_eq!(list.as_bytes(), [0, 0]);

        let mut empty = StatusList::new(0);
        assert!(empty.as_bytes().is_empty());
        assert!(empty.set(0, TokenStatus::Valid).is_err());
        assert_eq!(empty.get(0), None);
    }

    #[test]
    fn set_reports_changes() {
        let mut list = StatusList::new(10);
        assert!(!list.set(9, TokenStatus::Valid).unwrap());
        assert!(list.set(9, TokenStatus::Suspended).unwrap());
        assert!(!list.set(9, TokenStatus::Suspended).unwrap());
        assert!(list.set(9, TokenStatus::Valid).unwrap());
        // A raw 3 reads as invalid, but writing invalid is still a change.
        let mut raw3 = StatusList::from_bytes(vec![0b11]);
        assert_eq!(raw3.get(0), Some(TokenStatus::Invalid));
        assert!(raw3.set(0, TokenStatus::Invalid).unwrap());
        assert_eq!(raw3.raw(0), Some(1));
    }

    #[test]
    fn count_by_status() {
        let mut list = StatusList::new(10);
        list.set(0, TokenStatus::Invalid).unwrap();
        list.set(5, TokenStatus::Suspended).unwrap();
        list.set(9, TokenStatus::Invalid).unwrap();
        assert_eq!(list.count(TokenStatus::Invalid), 2);
        assert_eq!(list.count(TokenStatus::Suspended), 1);
        assert_eq!(list.count(TokenStatus::Valid), 7);
        let draft = StatusList::decode(2, DRAFT_2BIT_LST).unwrap();
        // Four 1s and three 3s read as invalid.
        assert_eq!(draft.count(TokenStatus::Invalid), 7);
        assert_eq!(draft.count(TokenStatus::Suspended), 2);
        assert_eq!(draft.count(TokenStatus::Valid), 3);
    }

    #[test]
    fn decode_rejects_bad_bits() {
        for bits in [0, 3, 5, 16, 255] {
            assert!(matches!(
                StatusList::decode(bits, DRAFT_2BIT_LST),
                Err(StatusListError::InvalidBits(b)) if b == bits
            ));
        }
        for bits in [1, 4, 8] {
            let err = StatusList::decode(bits, DRAFT_2BIT_LST).unwrap_err();
            assert!(matches!(err, StatusListError::UnsupportedBits(b) if b == bits));
            assert!(err.to_string().contains("only 2"), "{err}");
        }
    }

    #[test]
    fn decode_rejects_bad_base64() {
        for lst in [
            "eNo7 6fITAAPfAgc",
            "eNo76fITAAPfAgc!",
            "eNo+6fITAAPfAgc",
            "e",
        ] {
            assert!(
                matches!(StatusList::decode(2, lst), Err(StatusListError::Base64(_))),
                "{lst}"
            );
        }
    }

    #[test]
    fn decode_accepts_padding() {
        let list = StatusList::decode(2, "eNo76fITAAPfAgc=").unwrap();
        assert_eq!(list.as_bytes(), DRAFT_2BIT_BYTES);
    }

    #[test]
    fn decode_rejects_bad_zlib() {
        let not_zlib = URL_SAFE_NO_PAD.encode(b"not a zlib stream at all");
        let mut truncated = deflate(&[1, 2, 3, 4, 5, 6, 7, 8]);
        truncated.truncate(truncated.len() - 3);
        let mut bad_checksum = deflate(&[9; 100]);
        if let Some(last) = bad_checksum.last_mut() {
            *last ^= 0xFF;
        }
        for (name, lst) in [
            ("empty", String::new()),
            ("not zlib", not_zlib),
            ("truncated", URL_SAFE_NO_PAD.encode(truncated)),
            ("bad checksum", URL_SAFE_NO_PAD.encode(bad_checksum)),
        ] {
            let result = StatusList::decode(2, &lst);
            assert!(
                matches!(result, Err(StatusListError::Zlib(_))),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn decode_rejects_trailing_data() {
        let mut bytes = deflate(&DRAFT_2BIT_BYTES);
        bytes.extend_from_slice(b"junk");
        let result = StatusList::decode(2, &URL_SAFE_NO_PAD.encode(bytes));
        assert!(
            matches!(result, Err(StatusListError::TrailingData)),
            "{result:?}"
        );
    }

    #[test]
    fn decode_refuses_oversized_lists() {
        let bomb = deflate(&vec![0; MAX_DECOMPRESSED_LEN + 1]);
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let result = StatusList::decode(2, &URL_SAFE_NO_PAD.encode(bomb));
        assert!(
            matches!(
                result,
                Err(StatusListError::TooLarge {
                    limit: MAX_DECOMPRESSED_LEN
                })
            ),
            "{result:?}"
        );
    }

    #[test]
    fn empty_list_round_trips() {
        let list = StatusList::new(0);
        let back = StatusList::decode(2, &list.encode_lst()).unwrap();
        assert_eq!(back.capacity(), 0);
    }

    #[test]
    fn million_entries_round_trip_under_20kb() {
        let list = revoked_list(1_000_000, 10_000, 0x9E37_79B9_7F4A_7C15);
        assert_eq!(list.count(TokenStatus::Invalid), 10_000);
        let compressed = list.compressed();
        assert!(
            compressed.len() < 20_000,
            "1M entries, 1% revoked: {} bytes compressed",
            compressed.len()
        );
        let lst = list.encode_lst();
        assert_eq!(lst, URL_SAFE_NO_PAD.encode(&compressed));
        let back = StatusList::decode(STATUS_BITS, &lst).unwrap();
        // Equal capacity too: 1M is a multiple of 4 entries per byte.
        assert_eq!(back, list);
    }

    #[test]
    fn stored_fallback_is_valid_zlib() {
        for len in [0, 1, 3, 0xFFFF, 0x1_0000, 200_000] {
            let mut rng = XorShift(len as u64 + 1);
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let lst = URL_SAFE_NO_PAD.encode(stored_zlib(&bytes));
            assert_eq!(inflate(&lst).unwrap(), bytes, "len {len}");
        }
    }

    #[test]
    fn payload_round_trips() {
        let mut list = StatusList::new(100);
        list.set(42, TokenStatus::Suspended).unwrap();
        let payload = StatusListPayload::from_list(&list);
        assert_eq!(payload.bits, 2);
        assert_eq!(payload.decode().unwrap(), list);
    }

    #[test]
    fn claims_serde_shape() {
        let claims = StatusListClaims {
            sub: "https://latchkey.example/v1/status/1".into(),
            iat: 1_686_920_170,
            exp: Some(2_291_720_170),
            ttl: Some(43_200),
            seq: None,
            epoch: None,
            status_list: StatusListPayload {
                bits: 2,
                lst: DRAFT_2BIT_LST.into(),
                aggregation_uri: None,
            },
        };
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "sub": "https://latchkey.example/v1/status/1",
                "iat": 1_686_920_170,
                "exp": 2_291_720_170_i64,
                "ttl": 43_200,
                "status_list": {"bits": 2, "lst": "eNo76fITAAPfAgc"}
            })
        );
        let back: StatusListClaims = serde_json::from_value(json).unwrap();
        assert_eq!(back, claims);

        // Optional members may be absent, and aggregation_uri is carried.
        let minimal: StatusListClaims = serde_json::from_str(
            r#"{"sub":"https://example.com/statuslists/1","iat":1686920170,
                "status_list":{"bits":1,"lst":"eNrbuRgAAhcBXQ",
                "aggregation_uri":"https://example.com/statuslists"}}"#,
        )
        .unwrap();
        assert_eq!(minimal.exp, None);
        assert_eq!(minimal.ttl, None);
        assert_eq!(
            minimal.status_list.aggregation_uri.as_deref(),
            Some("https://example.com/statuslists")
        );
        let out = serde_json::to_string(&StatusListClaims {
            exp: None,
            ttl: None,
            ..claims
        })
        .unwrap();
        assert!(
            !out.contains("exp") && !out.contains("ttl") && !out.contains("aggregation"),
            "{out}"
        );
    }
}
