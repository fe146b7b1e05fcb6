//! Listings as the kernel pages through them: READDIR and READDIRPLUS hand out each entry once
//! however small the pages, and every entry READDIRPLUS hands out is a lookup the kernel will
//! FORGET, counted exactly so.

use super::*;

/// One entry a call handed out: the offset after it, the entry, its attributes (READDIRPLUS).
type Taken = (u64, DirEntry, Option<Attr>);

/// Pages through the open directory `fh` as the kernel does, `room` entries a call: each call
/// starts from the offset of the last entry taken and ends at the first entry that does not
/// fit. Returns the pages.
fn pages(fs: &QueueFs, fh: u64, room: usize, plus: bool) -> Vec<Vec<Taken>> {
    let mut pages = Vec::new();
    let mut offset = 0;
    loop {
        let mut page: Vec<Taken> = Vec::new();
        let mut offered = 0;
        let mut take = |next: u64, e: &DirEntry, a: Option<&Attr>| {
            offered += 1;
            if page.len() == room {
                return true;
            }
            page.push((next, e.clone(), a.cloned()));
            false
        };
        if plus {
            fs.readdirplus(fh, offset, None, |next, e, a| take(next, e, Some(a)))
        } else {
            fs.readdir(fh, offset, |next, e| take(next, e, None))
        }
        .unwrap();
        assert!(
            offered <= room + 1,
            "a call hands out what fits and the one entry that did not ({offered} for {room})"
        );
        let Some((last, _, _)) = page.last() else {
            return pages;
        };
        offset = *last;
        pages.push(page);
    }
}

fn names(pages: &[Vec<Taken>]) -> Vec<String> {
    pages
        .iter()
        .flatten()
        .map(|(_, e, _)| e.name.clone())
        .collect()
}

fn publish_many(f: &Fixture, n: usize) -> Vec<String> {
    let q = f.other.queue("q").unwrap();
    (0..n)
        .map(|i| {
            q.publish(serde_json::json!(i), &PublishOptions::default())
                .unwrap()
                .id
        })
        .collect()
}

#[test]
fn readdir_and_readdirplus_page_a_deep_directory_handing_out_each_entry_once() {
    const WAITING: usize = 3_000;
    let f = fixture();
    let ids = publish_many(&f, WAITING);
    let q = f.fs.lookup(ROOT_INO, "q").unwrap().ino;
    let messages = f.fs.lookup(q, "messages").unwrap().ino;
    let mut expected = vec![".".to_string(), "..".to_string()];
    expected.extend(ids);
    for plus in [false, true] {
        for room in [1, 7, 64] {
            let fh = f.fs.opendir(messages).unwrap();
            let pages = pages(&f.fs, fh, room, plus);
            f.fs.releasedir(fh);
            assert_eq!(pages.len(), expected.len().div_ceil(room), "plus: {plus}");
            assert_eq!(names(&pages), expected, "plus: {plus}, {room} a page");
        }
    }
    // READDIRPLUS gives each entry the attributes LOOKUP gives it.
    let fh = f.fs.opendir(messages).unwrap();
    let taken = pages(&f.fs, fh, 50, true);
    f.fs.releasedir(fh);
    for (_, e, a) in taken.iter().flatten().skip(2).step_by(97) {
        assert_eq!(a.as_ref(), Some(&f.fs.lookup(messages, &e.name).unwrap()));
    }
    let (_, _, dot) = &taken[0][0];
    assert_eq!(dot.as_ref(), Some(&f.fs.getattr(messages).unwrap()));
}

#[test]
fn readdirplus_remembers_each_entry_once_per_time_it_is_returned_and_forget_empties_the_table() {
    const WAITING: usize = 500;
    let f = fixture();
    publish_many(&f, WAITING);
    assert_eq!(f.fs.inode_count(), 1, "the root alone");
    let q = f.fs.lookup(ROOT_INO, "q").unwrap().ino;
    let messages = f.fs.lookup(q, "messages").unwrap().ino;
    let looked_up = f.fs.inode_count();

    // Listed twice, in pages of different sizes: the entry that did not fit a page is handed
    // out again at the start of the next one, and must count only there.
    let mut returned: HashMap<u64, u64> = HashMap::new();
    for room in [13, 40] {
        let fh = f.fs.opendir(messages).unwrap();
        for (_, e, a) in pages(&f.fs, fh, room, true).iter().flatten() {
            if e.name != "." && e.name != ".." {
                *returned.entry(a.as_ref().unwrap().ino).or_default() += 1;
            }
        }
        f.fs.releasedir(fh);
    }
    assert_eq!(returned.len(), WAITING);
    assert!(returned.values().all(|n| *n == 2));
    assert_eq!(f.fs.inode_count(), looked_up + WAITING);

    // The kernel forgets what it was handed, in as many FORGETs as it likes.
    for (ino, n) in &returned {
        f.fs.forget(*ino, n - 1);
        f.fs.getattr(*ino).unwrap();
        f.fs.forget(*ino, 1);
        assert_eq!(errno(f.fs.getattr(*ino)), libc::ENOENT);
    }
    assert_eq!(f.fs.inode_count(), looked_up);
    // "." and ".." took nothing: one FORGET each for the two LOOKUPs leaves the root alone.
    f.fs.forget(messages, 1);
    f.fs.forget(q, 1);
    assert_eq!(f.fs.inode_count(), 1);
}

#[test]
fn messages_consumed_between_listing_and_use_answer_enoent_and_leave_nothing_held() {
    const WAITING: usize = 100;
    const CONSUMED: usize = 10;
    let f = fixture();
    let ids = publish_many(&f, WAITING);
    let q = f.fs.lookup(ROOT_INO, "q").unwrap().ino;
    let messages = f.fs.lookup(q, "messages").unwrap().ino;
    let looked_up = f.fs.inode_count();
    let fh = f.fs.opendir(messages).unwrap();
    // Another client takes the head of the queue after the listing was made.
    let queue = f.other.queue("q").unwrap();
    assert_eq!(
        queue.consume(CONSUMED, &Default::default()).unwrap().len(),
        CONSUMED
    );
    let taken = pages(&f.fs, fh, 16, true);
    f.fs.releasedir(fh);
    let by_name: HashMap<String, u64> = taken
        .iter()
        .flatten()
        .skip(2)
        .map(|(_, e, a)| (e.name.clone(), a.as_ref().unwrap().ino))
        .collect();
    assert_eq!(by_name.len(), WAITING, "the listing as it was made");
    for (i, id) in ids.iter().enumerate() {
        let ino = by_name[id];
        // Held by the kernel until it forgets it, whether the message is still there or not.
        f.fs.getattr(ino).unwrap();
        if i < CONSUMED {
            assert_eq!(errno(f.fs.open(ino, Access::Read, 1)), libc::ENOENT);
            assert_eq!(errno(f.fs.lookup(messages, id)), libc::ENOENT);
        } else if i == CONSUMED {
            let fh = f.fs.open(ino, Access::Read, 1).unwrap();
            f.fs.release(fh).unwrap();
        }
        f.fs.forget(ino, 1);
    }
    assert_eq!(f.fs.inode_count(), looked_up);
    assert_eq!(
        f.counts("q"),
        (WAITING - CONSUMED, CONSUMED),
        "looking took nothing"
    );
}
