//! A [`Dispatch`] that records what it is handed (what the bridge or a tick would send).

use std::time::Duration;

use stashless::dispatch::{Change, Dispatch};
use tokio::sync::Mutex;

/// Records every dispatched change, in order.
#[derive(Default)]
pub struct Recorder(pub Mutex<Vec<Change>>);

#[async_trait::async_trait]
impl Dispatch for Recorder {
    async fn dispatch(&self, changes: &[Change]) -> stashless::Result<()> {
        self.0.lock().await.extend_from_slice(changes);
        Ok(())
    }
}

impl Recorder {
    /// What was recorded once there are at least `n` changes, or after 30 s (the caller
    /// asserts on what came).
    pub async fn wait_for(&self, n: usize) -> Vec<Change> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.0.lock().await.clone();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
