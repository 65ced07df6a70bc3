//! Transfer progress: a live bar on a terminal, nothing in between otherwise (the summary
//! lines are printed either way).

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new() -> Progress {
        let bar = if std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// Start showing a transfer called `what`.
    pub fn begin(&self, what: &str) {
        self.bar.reset();
        self.bar.set_message(what.to_string());
        self.bar
            .enable_steady_tick(std::time::Duration::from_millis(100));
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// The callback the backup and restore functions report moved bytes to.
    pub fn callback(&self) -> stashless::context::Progress {
        let bar = self.bar.clone();
        Arc::new(move |bytes| bar.set_position(bytes))
    }
}
