//! The runner's output: the commands' stdout and stderr passed through whole lines at a time,
//! so lines of tasks running side by side never mix within a line (`--tag` puts the message id
//! and a tab before each), and on a terminal a status line at the bottom of stderr that is
//! wiped before any other output and drawn again after it.

use std::io::{self, Write};

/// A line longer than this is passed on in pieces of this size, each ended with a newline:
/// output with no newline at all must not grow without bound.
const MAX_LINE: usize = 1 << 20;

/// Which of our streams a command's stream goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// The part of a command's stream after its last newline, waiting for the rest of its line.
#[derive(Default)]
pub struct LineBuffer {
    partial: Vec<u8>,
}

impl LineBuffer {
    /// Adds `bytes` read from the command; returns the whole lines now complete (with their
    /// newlines), keeping the rest.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.partial.extend_from_slice(bytes);
        match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let rest = self.partial.split_off(last + 1);
                std::mem::replace(&mut self.partial, rest)
            }
            None if self.partial.len() >= MAX_LINE => {
                let mut piece = std::mem::take(&mut self.partial);
                piece.push(b'\n');
                piece
            }
            None => Vec::new(),
        }
    }

    /// At the end of the stream: the last line, given the newline it lacked (so the next
    /// task's output starts on a line of its own).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut last = std::mem::take(&mut self.partial);
        if !last.is_empty() {
            last.push(b'\n');
        }
        last
    }
}

/// Where the lines go.
pub struct Output {
    tag: bool,
    /// The status line is drawn (stderr is a terminal and it was asked for).
    status_shown: bool,
    status_enabled: bool,
    /// Our stdout was closed by its reader: the commands' stdout is dropped from then on.
    stdout_closed: bool,
}

impl Output {
    pub fn new(tag: bool, status_line: bool) -> Output {
        Output {
            tag,
            status_shown: false,
            status_enabled: status_line,
            stdout_closed: false,
        }
    }

    /// Writes complete `lines` of the task with message id `id` to `stream`, in one write.
    pub fn lines(&mut self, stream: Stream, id: &str, lines: &[u8]) {
        if lines.is_empty() {
            return;
        }
        let tagged;
        let text = if self.tag {
            let mut t = Vec::with_capacity(lines.len() + 8 * (id.len() + 1));
            for line in lines.split_inclusive(|&b| b == b'\n') {
                t.extend_from_slice(id.as_bytes());
                t.push(b'\t');
                t.extend_from_slice(line);
            }
            tagged = t;
            &tagged[..]
        } else {
            lines
        };
        self.clear_status();
        match stream {
            Stream::Stdout if self.stdout_closed => {}
            Stream::Stdout => {
                let mut out = io::stdout().lock();
                if let Err(e) = out.write_all(text).and_then(|_| out.flush()) {
                    self.stdout_closed = true;
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        self.notice(&format!("writing to stdout failed ({e}): dropping the commands' output from now on"));
                    }
                }
            }
            Stream::Stderr => {
                let _ = io::stderr().lock().write_all(text);
            }
        }
    }

    /// A line of the runner's own on stderr (`ddmq work: …`), in one write: a line cut short
    /// by whatever ends the runner (Slurm's SIGKILL) is never half written.
    pub fn notice(&mut self, text: &str) {
        self.clear_status();
        let line = format!("ddmq work: {text}\n");
        let _ = io::stderr().lock().write_all(line.as_bytes());
    }

    /// Draws the status line (a terminal only): it stays until the next output wipes it.
    pub fn status(&mut self, text: &str) {
        if !self.status_enabled {
            return;
        }
        let _ = write!(io::stderr().lock(), "\r\x1b[K{text}");
        self.status_shown = true;
    }

    /// Wipes the status line, if drawn.
    pub fn clear_status(&mut self) {
        if self.status_shown {
            let _ = write!(io::stderr().lock(), "\r\x1b[K");
            self.status_shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineBuffer;

    #[test]
    fn passes_whole_lines_and_keeps_the_rest() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"ab"), b"");
        assert_eq!(b.push(b"c\nde\nf"), b"abc\nde\n");
        assert_eq!(b.push(b"g\n"), b"fg\n");
        assert_eq!(b.push(b"tail"), b"");
        assert_eq!(b.finish(), b"tail\n");
        assert_eq!(b.finish(), b"");
    }
}
