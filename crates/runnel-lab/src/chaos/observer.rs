//! A client that watches numbers which must never go backwards while the faults run: every
//! partition's high watermark (ListOffsets LATEST through the leader, as a consumer asks for
//! the end of a partition) and the consumer group's committed offsets (OffsetFetch), each
//! sampled every [`SAMPLE_EVERY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use runnel_client::{offset_spec, Client};
use serde::Serialize;
use tokio::sync::watch;

use super::workload::connect;
use crate::bounded_client::REQUEST_TIMEOUT;

/// How often both are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How many regressions a verdict describes.
const SAMPLE: usize = 10;

/// One observed value of one partition, at seconds since the workload started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub(crate) at: f64,
    pub(crate) partition: i32,
    pub(crate) value: i64,
}

/// What the observer saw.
#[derive(Debug, Default)]
pub(crate) struct Observations {
    pub(crate) high_watermarks: Vec<Sample>,
    pub(crate) high_watermark_errors: u64,
    pub(crate) high_watermark_last_error: Option<String>,
    pub(crate) committed: Vec<Sample>,
    pub(crate) committed_errors: u64,
    pub(crate) committed_last_error: Option<String>,
}

/// The verdict on one series that must never decrease.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct MonotonicVerdict {
    pub(crate) samples: usize,
    /// Samples that failed (no leader, timeouts, OFFSET_NOT_AVAILABLE): allowed.
    pub(crate) errors: u64,
    /// Samples lower than an earlier sample of the same partition: must be none.
    pub(crate) went_backwards: usize,
    /// The first few of them.
    pub(crate) went_backwards_sample: Vec<String>,
    /// The last failed sample's error.
    pub(crate) last_error: Option<String>,
}

impl MonotonicVerdict {
    pub(crate) fn violated(&self) -> bool {
        self.went_backwards > 0
    }
}

/// Judges samples (in the order they were taken): any sample below the highest earlier one
/// of its partition went backwards.
pub(crate) fn check_monotonic(samples: &[Sample], errors: u64) -> MonotonicVerdict {
    let mut highest: HashMap<i32, Sample> = HashMap::new();
    let mut went_backwards = 0;
    let mut sample = Vec::new();
    for s in samples {
        match highest.get(&s.partition) {
            Some(h) if s.value < h.value => {
                went_backwards += 1;
                if sample.len() < SAMPLE {
                    sample.push(format!(
                        "partition {}: {} at {:.2} s after {} at {:.2} s",
                        s.partition, s.value, s.at, h.value, h.at
                    ));
                }
            }
            Some(h) if s.value == h.value => {}
            _ => {
                highest.insert(s.partition, *s);
            }
        }
    }
    MonotonicVerdict {
        samples: samples.len(),
        errors,
        went_backwards,
        went_backwards_sample: sample,
        last_error: None,
    }
}

/// Samples `topic`'s high watermarks and `group`'s committed offsets until `stop` turns
/// true. Every request is bounded; after a timeout the client is dropped (its connection is
/// in an unknown state) and made anew.
pub(crate) async fn observe(
    bootstrap: String,
    topic: String,
    partitions: i32,
    group: String,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) -> Observations {
    let mut seen = Observations::default();
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return seen,
        }
        if *stop.borrow() {
            return seen;
        }
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&bootstrap).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    seen.high_watermark_errors += 1;
                    seen.high_watermark_last_error = Some(format!("{e:#}"));
                    continue;
                }
            },
        };
        let mut timed_out = false;
        for partition in 0..partitions {
            let asked = tokio::time::timeout(
                REQUEST_TIMEOUT,
                c.list_offsets_attempt(&topic, partition, offset_spec::LATEST),
            )
            .await;
            let at = started.elapsed().as_secs_f64();
            match asked {
                Ok(Ok(value)) => seen.high_watermarks.push(Sample {
                    at,
                    partition,
                    value,
                }),
                Ok(Err(e)) => {
                    seen.high_watermark_errors += 1;
                    seen.high_watermark_last_error = Some(e.to_string());
                    // The leader may have moved: ask for it again, as a client would.
                    if tokio::time::timeout(REQUEST_TIMEOUT, c.topic_metadata(&topic))
                        .await
                        .is_err()
                    {
                        timed_out = true;
                        break;
                    }
                }
                Err(_) => {
                    seen.high_watermark_errors += 1;
                    seen.high_watermark_last_error = Some("ListOffsets timed out".to_owned());
                    timed_out = true;
                    break;
                }
            }
        }
        if !timed_out {
            let wanted = [(topic.clone(), (0..partitions).collect::<Vec<i32>>())];
            let asked = tokio::time::timeout(
                REQUEST_TIMEOUT,
                c.committed_offsets_attempt(&group, Some(&wanted)),
            )
            .await;
            let at = started.elapsed().as_secs_f64();
            match asked {
                Ok(Ok(offsets)) => {
                    seen.committed
                        .extend(offsets.iter().filter(|o| o.topic == topic).map(|o| Sample {
                            at,
                            partition: o.partition,
                            value: o.offset,
                        }))
                }
                Ok(Err(e)) => {
                    seen.committed_errors += 1;
                    seen.committed_last_error = Some(e.to_string());
                }
                Err(_) => {
                    seen.committed_errors += 1;
                    seen.committed_last_error = Some("OffsetFetch timed out".to_owned());
                    timed_out = true;
                }
            }
        }
        if timed_out {
            client = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: f64, partition: i32, value: i64) -> Sample {
        Sample {
            at,
            partition,
            value,
        }
    }

    #[test]
    fn rising_and_flat_series_pass() {
        let v = check_monotonic(&[s(0.0, 0, 5), s(0.0, 1, 2), s(0.3, 0, 5), s(0.5, 0, 9)], 3);
        assert_eq!(v.samples, 4);
        assert_eq!(v.errors, 3);
        assert!(!v.violated());
    }

    #[test]
    fn a_drop_below_any_earlier_sample_counts_even_when_it_recovers() {
        let v = check_monotonic(
            &[s(0.0, 0, 10), s(0.3, 0, 7), s(0.5, 0, 9), s(0.8, 0, 12)],
            0,
        );
        // 7 and 9 are both below 10.
        assert_eq!(v.went_backwards, 2);
        assert_eq!(
            v.went_backwards_sample[0],
            "partition 0: 7 at 0.30 s after 10 at 0.00 s"
        );
        assert!(v.violated());
    }

    #[test]
    fn partitions_are_judged_apart() {
        let v = check_monotonic(&[s(0.0, 0, 10), s(0.1, 1, 3), s(0.2, 1, 4)], 0);
        assert!(!v.violated());
    }

    #[test]
    fn the_sample_is_bounded() {
        let mut samples = vec![s(0.0, 0, 100)];
        samples.extend((0..50).map(|i| s(f64::from(i), 0, 1)));
        let v = check_monotonic(&samples, 0);
        assert_eq!(v.went_backwards, 50);
        assert_eq!(v.went_backwards_sample.len(), SAMPLE);
    }
}
