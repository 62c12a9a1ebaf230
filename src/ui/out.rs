//! Standard output for the text front-ends (`ask`, `repl`, `chat`, `parse`).
//!
//! A reader that goes away early (`parley ask ... | head -1`) is not an error: the
//! operator has read what they wanted. Rust ignores SIGPIPE, so the next write fails
//! with `BrokenPipe`; every text front-end writes through here, which from then on
//! drops output instead of failing, so the work in hand (a rollout being followed)
//! still ends properly and the process exits without a message.

use std::io::{self, Write};

/// Whether `e` says the reader of standard output has gone.
pub fn reader_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}

/// Standard output that goes quiet once its reader has gone.
#[derive(Debug, Default)]
pub struct Out {
    gone: bool,
}

impl Out {
    pub fn new() -> Out {
        Out::default()
    }

    /// Writes and flushes `text`; after the reader has gone, does nothing. Other
    /// errors (a full disk behind a redirect) are still errors.
    pub fn write(&mut self, text: &str) -> io::Result<()> {
        if self.gone {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            Err(e) if reader_gone(&e) => {
                self.gone = true;
                Ok(())
            }
            other => other,
        }
    }

    /// Whether the reader has gone (and output is being dropped).
    pub fn gone(&self) -> bool {
        self.gone
    }
}
