//! Events leave the sessions through one bounded queue, posted by a few tasks of their own: a slow
//! or dead Events endpoint costs the sessions nothing (an Event is a notice, never a gate), and a
//! flood of them is dropped and counted instead of growing memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::k8s::{EventRecorder, Workload, WorkloadEvent};

/// Events waiting to be posted, at most.
pub const QUEUE_CAPACITY: usize = 4096;
/// Events posted at once.
const CONCURRENT_POSTS: usize = 8;

/// The sessions' side of the queue.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<(Arc<Workload>, WorkloadEvent)>,
    dropped: Arc<AtomicU64>,
}

impl EventQueue {
    /// The queue and the task that drains it through `recorder`; `on_failure` hears each Event
    /// that could not be posted.
    pub fn start(
        recorder: EventRecorder,
        on_failure: impl Fn(&Workload, &WorkloadEvent, String) + Send + Sync + 'static,
    ) -> (EventQueue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel::<(Arc<Workload>, WorkloadEvent)>(QUEUE_CAPACITY);
        let recorder = Arc::new(recorder);
        let on_failure = Arc::new(on_failure);
        let task = tokio::spawn(async move {
            tokio_stream_of(rx)
                .for_each_concurrent(CONCURRENT_POSTS, |(w, ev)| {
                    let recorder = recorder.clone();
                    let on_failure = on_failure.clone();
                    async move {
                        if let Err(e) = recorder.publish(&w, &ev).await {
                            on_failure(&w, &ev, e.to_string());
                        }
                    }
                })
                .await;
        });
        (
            EventQueue {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    /// Queues one Event; when the queue is full it is dropped and counted.
    pub fn post(&self, workload: &Arc<Workload>, event: WorkloadEvent) {
        if self.tx.try_send((workload.clone(), event)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events dropped because the queue was full (or closed).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
