//! Bodies written to `in` in order, out of order and truncated: each publishes what a file
//! written the same way would hold, in a message file identical to what a one-shot publish of
//! that text writes, and leaves no other file.

use super::*;
use crate::engine::Message;

/// Files in the queue directory that are not its settings, `work/` or a message.
fn temporaries(f: &Fixture) -> Vec<String> {
    std::fs::read_dir(f.other.queue("q").unwrap().dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// The published messages' bodies, each file checked against what `to_json` writes.
fn published(f: &Fixture) -> Vec<String> {
    let q = f.other.queue("q").unwrap();
    q.waiting()
        .unwrap()
        .iter()
        .map(|w| {
            let bytes = std::fs::read(q.dir().join(w.to_string())).unwrap();
            let record = Message::from_json(&bytes).unwrap();
            assert!(bytes == record.to_json().as_bytes(), "file as to_json");
            record.body_text()
        })
        .collect()
}

fn set_len(f: &Fixture, fh: u64, size: u64) -> Result<()> {
    f.fs.setattr(
        f.ino("q/in"),
        Some(fh),
        &SetAttr {
            size: Some(size),
            ..SetAttr::default()
        },
    )
    .map(drop)
}

#[test]
fn in_order_writes_cutting_characters_are_escaped_on_the_way() {
    let f = fixture();
    let text = "a€😀\"\\\n\u{7f}é".repeat(10_000); // 170 KB
    let fh = f.fs.open(f.ino("q/in"), Access::Write, PID).unwrap();
    let mut at = 0;
    for piece in text.as_bytes().chunks(4093) {
        f.fs.write(fh, at, piece).unwrap();
        at += piece.len() as u64;
    }
    // A write past the end leaves a hole of zeros, still in order.
    f.fs.write(fh, at + 3, b"end").unwrap();
    let names = temporaries(&f);
    assert!(
        names.len() == 1 && names[0].starts_with(".tmp-in-"),
        "the body goes to its message file as it arrives: {names:?}"
    );
    f.fs.flush(fh, PID).unwrap();
    f.fs.release(fh).unwrap();
    assert_eq!(published(&f), [format!("{text}\0\0\0end")]);
    assert_eq!(temporaries(&f), Vec::<String>::new());
}

#[test]
fn a_body_going_out_of_order_is_decoded_to_raw_and_published_as_a_file_holds_it() {
    let f = fixture();
    let text = "ü😀x".repeat(10_000); // 70 KB, written in order first
    let fh = f.fs.open(f.ino("q/in"), Access::Write, PID).unwrap();
    f.fs.write(fh, 0, text.as_bytes()).unwrap();
    assert_eq!(temporaries(&f).len(), 1);
    // Back into the middle, cutting no character: the body leaves its message file.
    f.fs.write(fh, 7, "é".as_bytes()).unwrap();
    assert_eq!(
        temporaries(&f),
        Vec::<String>::new(),
        "raw, in a file with no name"
    );
    set_len(&f, fh, 56_000).unwrap();
    f.fs.write(fh, 56_000, "tail".as_bytes()).unwrap();
    f.fs.flush(fh, PID).unwrap();
    f.fs.release(fh).unwrap();
    let mut model = text.into_bytes();
    model[7..9].copy_from_slice("é".as_bytes());
    model.truncate(56_000);
    model.extend_from_slice(b"tail");
    assert_eq!(published(&f), [String::from_utf8(model).unwrap()]);
    assert_eq!(temporaries(&f), Vec::<String>::new());
}

/// A tiny random generator (xorshift): the sequences are the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Random writes (in order, past the end, before the end, cutting characters) and truncations:
/// what is published is what a file would hold, or, when that is not UTF-8, nothing, with
/// EILSEQ at the write that made it so or at close.
#[test]
fn random_writes_and_truncations_publish_what_a_file_would_hold() {
    const PIECES: [&str; 8] = ["a", "é", "€", "😀", "\"", "\\", "\0", "\u{7f}"];
    for seed in 1..=100u64 {
        let f = fixture();
        let mut rng = Rng(seed * 0x9e37_79b9_7f4a_7c15);
        let fh = f.fs.open(f.ino("q/in"), Access::Write, PID).unwrap();
        let mut model: Vec<u8> = Vec::new();
        let mut refused = false;
        for _ in 0..24 {
            let len = model.len() as u64;
            let mut data = Vec::new();
            for _ in 0..rng.below(3000) {
                data.extend_from_slice(PIECES[rng.below(8) as usize].as_bytes());
            }
            let cut_chars = rng.below(30) == 0;
            if cut_chars {
                data.truncate(rng.below(data.len() as u64 + 1) as usize);
            }
            // Mostly at a character's start, so that most sequences stay text.
            let boundary = |rng: &mut Rng, n: u64| {
                let mut at = rng.below(n) as usize;
                while !cut_chars && at < model.len() && model[at] & 0xc0 == 0x80 {
                    at -= 1;
                }
                at as u64
            };
            let result = match rng.below(10) {
                0 => {
                    let size = boundary(&mut rng, len + 5000);
                    model.resize(size as usize, 0);
                    set_len(&f, fh, size)
                }
                1 | 2 => {
                    let at = boundary(&mut rng, len + 1);
                    // Ending where a character of the model starts, unless cutting.
                    while !cut_chars
                        && at as usize + data.len() < model.len()
                        && model[at as usize + data.len()] & 0xc0 == 0x80
                    {
                        data.push(b'a');
                    }
                    let end = at as usize + data.len();
                    model.resize(model.len().max(end), 0);
                    model[at as usize..end].copy_from_slice(&data);
                    f.fs.write(fh, at, &data).map(drop)
                }
                3 => {
                    let at = len + rng.below(100);
                    model.resize(at as usize, 0);
                    model.extend_from_slice(&data);
                    f.fs.write(fh, at, &data).map(drop)
                }
                _ => {
                    model.extend_from_slice(&data);
                    f.fs.write(fh, len, &data).map(drop)
                }
            };
            if let Err(e) = result {
                assert_eq!(e.errno(), libc::EILSEQ, "seed {seed}: {e}");
                assert!(std::str::from_utf8(&model).is_err(), "seed {seed}");
                refused = true;
                break;
            }
        }
        let closed = f.fs.flush(fh, PID);
        f.fs.release(fh).unwrap();
        match String::from_utf8(model) {
            Ok(text) => {
                closed.unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                assert!(published(&f) == [text], "seed {seed}");
            }
            Err(_) => {
                if !refused {
                    assert_eq!(errno(closed), libc::EILSEQ, "seed {seed}");
                }
                assert!(published(&f).is_empty(), "seed {seed}");
            }
        }
        assert_eq!(temporaries(&f), Vec::<String>::new(), "seed {seed}");
    }
}

/// A hole after a character cut by a write's end is not refused at once: a later write can
/// still complete or replace the character, as in a file. Small and large bodies alike.
#[test]
fn a_hole_after_a_cut_character_waits_for_the_close() {
    for before in [0usize, 40_000] {
        let f = fixture();
        let head = "h".repeat(before);
        let fh = f.fs.open(f.ino("q/in"), Access::Write, PID).unwrap();
        let at = head.len() as u64;
        f.fs.write(fh, 0, head.as_bytes()).unwrap();
        f.fs.write(fh, at, &"é".as_bytes()[..1]).unwrap();
        f.fs.write(fh, at + 4, b"after the hole").unwrap();
        f.fs.write(fh, at, b"e").unwrap();
        f.fs.flush(fh, PID).unwrap();
        f.fs.release(fh).unwrap();
        assert_eq!(published(&f), [format!("{head}e\0\0\0after the hole")]);
        assert_eq!(temporaries(&f), Vec::<String>::new());
    }
}
