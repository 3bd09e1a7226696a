//! The wait between retries of a failed call.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff: waits `initial`, then twice as long each time, at most `max`.
/// Optionally bounded by a deadline (no wait that would end after it) and by a number of
/// waits. No jitter: none of the retry loops had any, and their timing is kept.
///
/// ```
/// # async fn call() -> Result<(), ()> { Ok(()) }
/// # async fn example() -> Result<(), ()> {
/// use std::time::Duration;
/// use runnel_util::Backoff;
///
/// let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
///     .with_max_retries(5);
/// loop {
///     match call().await {
///         Err(_) if backoff.wait().await => continue,
///         other => return other,
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Option<Instant>,
    retries_left: Option<u32>,
    retries: u32,
}

impl Backoff {
    /// First wait `initial`, doubling up to `max`; unbounded until a limit is added.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial.min(max),
            max,
            deadline: None,
            retries_left: None,
            retries: 0,
        }
    }

    /// Gives up rather than wait past `deadline`.
    pub fn with_deadline(self, deadline: Instant) -> Self {
        Self {
            deadline: Some(deadline),
            ..self
        }
    }

    /// Gives up after `max_retries` waits.
    pub fn with_max_retries(self, max_retries: u32) -> Self {
        Self {
            retries_left: Some(max_retries),
            ..self
        }
    }

    /// How many waits were taken so far.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The next wait, or `None` when a limit forbids it (the deadline would pass during it,
    /// or the retries are used up). Counts as taken: the following one is twice as long.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.retries_left == Some(0) {
            return None;
        }
        let delay = self.next;
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() + delay > deadline)
        {
            return None;
        }
        self.retries_left = self.retries_left.map(|n| n - 1);
        self.retries += 1;
        self.next = (delay * 2).min(self.max);
        Some(delay)
    }

    /// Sleeps for the next wait; false (at once) when a limit forbids it.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn delays(mut b: Backoff, n: usize) -> Vec<Option<Duration>> {
        (0..n).map(|_| b.next_delay()).collect()
    }

    #[test]
    fn doubles_up_to_max() {
        let b = Backoff::new(100 * MS, 1600 * MS);
        let expected: Vec<_> = [100, 200, 400, 800, 1600, 1600, 1600]
            .iter()
            .map(|&ms| Some(ms * MS))
            .collect();
        assert_eq!(delays(b, 7), expected);
    }

    #[test]
    fn max_not_a_power_of_two_of_initial() {
        let b = Backoff::new(50 * MS, 1000 * MS);
        let expected: Vec<_> = [50, 100, 200, 400, 800, 1000, 1000]
            .iter()
            .map(|&ms| Some(ms * MS))
            .collect();
        assert_eq!(delays(b, 7), expected);
    }

    #[test]
    fn constant_when_initial_is_max() {
        let b = Backoff::new(250 * MS, 250 * MS);
        assert_eq!(delays(b, 3), vec![Some(250 * MS); 3]);
    }

    #[test]
    fn stops_after_max_retries() {
        let mut b = Backoff::new(MS, MS).with_max_retries(2);
        assert_eq!(b.next_delay(), Some(MS));
        assert_eq!(b.next_delay(), Some(MS));
        assert_eq!(b.retries(), 2);
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.retries(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_past_the_deadline() {
        let start = Instant::now();
        let mut b = Backoff::new(50 * MS, 1000 * MS).with_deadline(start + 1000 * MS);
        // 50 + 100 + 200 + 400 = 750 ms; the next (800 ms) would end after the deadline.
        let mut waits = 0;
        while b.wait().await {
            waits += 1;
        }
        assert_eq!(waits, 4);
        assert_eq!(start.elapsed(), 750 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ending_exactly_at_the_deadline_is_taken() {
        let start = Instant::now();
        let mut b = Backoff::new(100 * MS, 100 * MS).with_deadline(start + 100 * MS);
        assert!(b.wait().await);
        assert_eq!(start.elapsed(), 100 * MS);
        assert!(!b.wait().await);
    }
}
