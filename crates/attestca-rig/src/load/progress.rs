//! Live progress on stderr: one line rewritten in place on a terminal, plain periodic lines
//! otherwise (logs, CI).

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Duration;

use super::report::Recorder;

/// A running progress reporter; [`Progress::finish`] stops it.
pub struct Progress {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Reports `what` (e.g. "enrollments") of a run of `planned` length.
    pub fn start(what: &'static str, planned: Duration, recorder: Arc<Recorder>) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let terminal = std::io::stderr().is_terminal();
        let every = if terminal {
            Duration::from_millis(250)
        } else if planned <= Duration::from_secs(20) {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(5)
        };
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                let s = recorder.snapshot();
                let line = format!(
                    "[{:>6.1}s/{:.0}s] {what}: {} done ({}/s last second), {} failed, p99 {:.2} ms",
                    s.elapsed.as_secs_f64(),
                    planned.as_secs_f64(),
                    s.completed,
                    s.last_second,
                    s.failed,
                    s.p99_ms
                );
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r\x1b[2K{line}")
                } else {
                    writeln!(err, "{line}")
                };
                let _ = err.flush();
            }
            if terminal {
                let _ = writeln!(std::io::stderr());
            }
        });
        Self { stop, task }
    }

    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
