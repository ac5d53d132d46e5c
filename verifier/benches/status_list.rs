//! Benchmarks of the Token Status List codec: one `set` in a list of a
//! million entries, and `encode_lst` of that list with 1% revoked (the
//! issuer re-encodes lazily after a change), per compression level.

use std::hint::black_box;
use std::io::Write;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flate2::Compression;
use flate2::write::ZlibEncoder;
use latchkey_verifier::claims::TokenStatus;
use latchkey_verifier::status_list::StatusList;

const ENTRIES: usize = 1_000_000;
const REVOKED: usize = ENTRIES / 100;

/// xorshift64: deterministic positions without a rand dependency.
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

fn revoked_list() -> StatusList {
    let mut list = StatusList::new(ENTRIES);
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut done = 0;
    while done < REVOKED {
        let idx = (rng.next() % ENTRIES as u64) as usize;
        if list.set(idx, TokenStatus::Invalid).unwrap_or(false) {
            done += 1;
        }
    }
    list
}

fn zlib(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(level));
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

fn bench(c: &mut Criterion) {
    let list = revoked_list();
    let compressed = list.compressed();
    let lst = list.encode_lst();
    println!(
        "status list: {ENTRIES} entries, {REVOKED} revoked: {} bytes packed, {} bytes compressed (best), lst {} chars",
        list.as_bytes().len(),
        compressed.len(),
        lst.len()
    );
    for level in [1, 6, 9] {
        println!(
            "  zlib level {level}: {} bytes",
            zlib(list.as_bytes(), level).len()
        );
    }

    let mut set_list = list.clone();
    let mut rng = XorShift(42);
    c.bench_function("status_list/set_1M", |b| {
        b.iter(|| {
            let idx = (rng.next() % ENTRIES as u64) as usize;
            let status = if idx.is_multiple_of(2) {
                TokenStatus::Suspended
            } else {
                TokenStatus::Valid
            };
            black_box(set_list.set(black_box(idx), status))
        })
    });

    c.bench_function("status_list/encode_lst_1M_1pct", |b| {
        b.iter(|| black_box(list.encode_lst()))
    });

    let mut group = c.benchmark_group("status_list/zlib_level_1M_1pct");
    for level in [1, 6, 9] {
        group.bench_with_input(BenchmarkId::from_parameter(level), &level, |b, &level| {
            b.iter(|| black_box(zlib(black_box(list.as_bytes()), level)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
