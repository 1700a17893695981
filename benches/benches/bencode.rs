//! Bencode: decoding a real-size `.torrent` info dictionary and an announce response, and
//! encoding a dictionary (the response writer's building block).

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]
// Benches are test code: a failed invariant should abort loudly.
#![allow(clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pbts_proto::bencode::{DecodeLimits, Encoder, decode};
use std::hint::black_box;

/// A v1 single-file torrent of 4 GiB in 256 KiB pieces: 16384 piece hashes (320 KiB).
fn torrent() -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    e.begin_dict();
    e.str("announce");
    e.str("http://tracker.example:8000/0123456789abcdef0123456789abcdef/announce");
    e.str("info");
    e.begin_dict();
    e.str("length");
    e.int(4 << 30);
    e.str("name");
    e.str("big.iso");
    e.str("piece length");
    e.int(256 << 10);
    e.str("pieces");
    e.bytes(&vec![0x5a; 20 * 16384]);
    e.str("private");
    e.int(1);
    e.end();
    e.end();
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bencode");
    let t = torrent();
    let limits = DecodeLimits::default();
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("decode_torrent_4gib", |b| {
        b.iter(|| {
            let v = decode(black_box(&t), &limits).unwrap();
            let info = v.get(b"info").unwrap();
            assert_eq!(info.get(b"piece length").unwrap().as_int(), Some(256 << 10));
        })
    });
    let resp = b"d8:completei5e10:downloadedi7e10:incompletei3e8:intervali1800e12:min intervali900e5:peers300:"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0x41, 300))
        .chain(*b"e")
        .collect::<Vec<u8>>();
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode_announce_response", |b| {
        b.iter(|| {
            let v = decode(black_box(&resp), &DecodeLimits::default()).unwrap();
            assert_eq!(v.get(b"interval").unwrap().as_int(), Some(1800));
        })
    });
    let mut out = Vec::with_capacity(512);
    g.bench_function("encode_scrape_dict", |b| {
        b.iter(|| {
            out.clear();
            let mut e = Encoder::new(&mut out);
            e.begin_dict();
            e.str("files");
            e.begin_dict();
            for i in 0..8u8 {
                e.bytes(&[i; 20]);
                e.begin_dict();
                e.str("complete");
                e.int(i64::from(i));
                e.str("downloaded");
                e.int(100);
                e.str("incomplete");
                e.int(3);
                e.end();
            }
            e.end();
            e.end();
            assert_eq!(black_box(&out).len(), 587);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
