//! The bookkeeping of a pipelined producer of one partition, as Kafka's Java producer keeps it
//! with `enable.idempotence=true` and `max.in.flight.requests.per.connection=5`: batches get
//! their sequence numbers when made, go out in sequence order, and their answers come back in
//! the order they were sent. After a failure nothing new is sent until every request in flight
//! is answered; then the unacknowledged batches are resent, in order. Pure: the workload does
//! the I/O.

use std::collections::VecDeque;

/// Requests in flight per partition producer with idempotence (Kafka's limit with it).
pub(crate) const MAX_IN_FLIGHT: usize = 5;

/// How the broker answered one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Written (or DUPLICATE_SEQUENCE_NUMBER: written before).
    Acked,
    /// Not written; resending the same batch may work (leadership, ISR, timeouts).
    Retriable,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER: retried if an earlier batch is still unacknowledged (its
    /// failure caused this one), else the sequence is broken for good.
    OutOfOrder,
    /// Resending cannot work (e.g. UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH, a corrupt
    /// request).
    Fatal,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Unsent,
    InFlight,
    /// Acknowledged at this time (seconds since the workload started).
    Acked(f64),
    Abandoned,
}

#[derive(Debug)]
struct Entry<P> {
    seqs: Vec<u64>,
    payload: P,
    state: State,
}

/// A batch that left the window, in sequence order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Finished {
    Acked { seqs: Vec<u64>, at: f64 },
    Abandoned { seqs: Vec<u64> },
}

/// What to do once a round with a failure has every answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RoundEnd {
    /// Something failed: back off, reconnect (the leader may have moved), resend.
    pub(crate) failed: bool,
    /// The sequence cannot go on: every unacknowledged batch was given up on; make a new
    /// producer (new producer id, sequences from 0), as the Java producer bumps its epoch.
    pub(crate) new_producer: bool,
}

/// The batches of one partition producer that are made but not yet acknowledged or given up
/// on, in sequence order, at most `max_in_flight` of them.
#[derive(Debug)]
pub(crate) struct Window<P> {
    entries: VecDeque<Entry<P>>,
    max_in_flight: usize,
    failed: bool,
    new_producer: bool,
}

impl<P> Window<P> {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            max_in_flight: max_in_flight.max(1),
            failed: false,
            new_producer: false,
        }
    }

    /// Whether a new batch may be made now.
    pub(crate) fn has_room(&self) -> bool {
        self.entries.len() < self.max_in_flight && !self.failed
    }

    pub(crate) fn push(&mut self, seqs: Vec<u64>, payload: P) {
        self.entries.push_back(Entry {
            seqs,
            payload,
            state: State::Unsent,
        });
    }

    /// The next batch to send, if sending is allowed now: the first unsent one.
    pub(crate) fn next_to_send(&self) -> Option<(usize, &P)> {
        if self.failed {
            return None;
        }
        self.entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.state == State::Unsent)
            .map(|(i, e)| (i, &e.payload))
    }

    /// `index` (from [`Window::next_to_send`]) went out.
    pub(crate) fn sent(&mut self, index: usize) {
        self.entries[index].state = State::InFlight;
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.state == State::InFlight)
            .count()
    }

    /// Applies the answer to the oldest request in flight; returns that batch's sequence
    /// numbers (None when nothing is in flight).
    pub(crate) fn answered(&mut self, answer: Answer, at: f64) -> Option<&[u64]> {
        let index = self
            .entries
            .iter()
            .position(|e| e.state == State::InFlight)?;
        let earlier_unacked = self
            .entries
            .iter()
            .take(index)
            .any(|e| !matches!(e.state, State::Acked(_)));
        let state = match answer {
            Answer::Acked => State::Acked(at),
            Answer::Retriable => State::Unsent,
            Answer::OutOfOrder if earlier_unacked => State::Unsent,
            Answer::OutOfOrder | Answer::Fatal => {
                self.new_producer = true;
                State::Abandoned
            }
        };
        if answer != Answer::Acked {
            self.failed = true;
        }
        let entry = &mut self.entries[index];
        entry.state = state;
        Some(&entry.seqs)
    }

    /// The connection failed: every request in flight may or may not have been written.
    /// Returns their sequence numbers.
    pub(crate) fn broken(&mut self) -> Vec<u64> {
        let mut in_doubt = Vec::new();
        for e in self
            .entries
            .iter_mut()
            .filter(|e| e.state == State::InFlight)
        {
            e.state = State::Unsent;
            in_doubt.extend(&e.seqs);
        }
        if !in_doubt.is_empty() || !self.entries.is_empty() {
            self.failed = true;
        }
        in_doubt
    }

    /// Ends the round once nothing is in flight (else does nothing): after a failure, allows
    /// sending again, and when the sequence cannot go on gives up on every unacknowledged
    /// batch.
    pub(crate) fn end_round(&mut self) -> RoundEnd {
        if self.in_flight() > 0 {
            return RoundEnd::default();
        }
        let end = RoundEnd {
            failed: self.failed,
            new_producer: self.new_producer,
        };
        if self.new_producer {
            for e in &mut self.entries {
                if !matches!(e.state, State::Acked(_)) {
                    e.state = State::Abandoned;
                }
            }
        }
        self.failed = false;
        self.new_producer = false;
        end
    }

    /// Takes the finished batches off the front, in sequence order: an acknowledged batch
    /// leaves only when every batch before it has left, so acknowledgements are reported in
    /// the order the records were sent, which is the order the log must hold them in.
    pub(crate) fn pop_finished(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Some(front) = self.entries.front() {
            let finished = match front.state {
                State::Acked(at) => Finished::Acked {
                    seqs: front.seqs.clone(),
                    at,
                },
                State::Abandoned => Finished::Abandoned {
                    seqs: front.seqs.clone(),
                },
                State::Unsent | State::InFlight => break,
            };
            out.push(finished);
            self.entries.pop_front();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(batches: u64) -> Window<u64> {
        let mut w = Window::new(MAX_IN_FLIGHT);
        for b in 0..batches {
            w.push(vec![b * 2, b * 2 + 1], b);
        }
        w
    }

    fn send_all(w: &mut Window<u64>) -> Vec<u64> {
        let mut sent = Vec::new();
        while let Some((i, &p)) = w.next_to_send() {
            sent.push(p);
            w.sent(i);
        }
        sent
    }

    fn acked(seqs: &[u64], at: f64) -> Finished {
        Finished::Acked {
            seqs: seqs.to_vec(),
            at,
        }
    }

    #[test]
    fn at_most_five_batches_and_acks_in_order() {
        let mut w = window(0);
        let mut made = 0;
        while w.has_room() {
            w.push(vec![made], made);
            made += 1;
        }
        assert_eq!(made, 5);
        assert_eq!(send_all(&mut w), vec![0, 1, 2, 3, 4]);
        assert_eq!(w.in_flight(), 5);
        assert_eq!(w.answered(Answer::Acked, 1.0), Some(&[0][..]));
        assert_eq!(w.pop_finished(), vec![acked(&[0], 1.0)]);
        assert!(w.has_room());
    }

    #[test]
    fn a_later_ack_waits_for_the_retried_batch_before_it() {
        // A fails after being written (NOT_ENOUGH_REPLICAS_AFTER_APPEND), B is acknowledged,
        // A's resend is acknowledged: reported A then B, the order the log holds them in.
        let mut w = window(2);
        send_all(&mut w);
        w.answered(Answer::Retriable, 1.0);
        assert!(!w.has_room(), "nothing new is made during a failed round");
        w.answered(Answer::Acked, 1.1);
        assert!(w.pop_finished().is_empty());
        assert!(
            w.next_to_send().is_none(),
            "no resend before the round ends"
        );
        assert_eq!(
            w.end_round(),
            RoundEnd {
                failed: true,
                new_producer: false
            }
        );
        assert_eq!(
            send_all(&mut w),
            vec![0],
            "only the unacknowledged batch is resent"
        );
        w.answered(Answer::Acked, 2.0);
        assert_eq!(
            w.pop_finished(),
            vec![acked(&[0, 1], 2.0), acked(&[2, 3], 1.1)]
        );
    }

    #[test]
    fn out_of_order_after_an_earlier_failure_is_retried_in_order() {
        let mut w = window(3);
        send_all(&mut w);
        w.answered(Answer::Retriable, 1.0);
        w.answered(Answer::OutOfOrder, 1.0);
        w.answered(Answer::OutOfOrder, 1.0);
        assert!(!w.end_round().new_producer);
        assert_eq!(send_all(&mut w), vec![0, 1, 2]);
        for t in [2.0, 2.1, 2.2] {
            w.answered(Answer::Acked, t);
        }
        assert_eq!(w.pop_finished().len(), 3);
    }

    #[test]
    fn out_of_order_of_the_next_batch_gives_up_on_the_unacknowledged_ones() {
        let mut w = window(3);
        send_all(&mut w);
        w.answered(Answer::Acked, 1.0);
        // Every batch before it is acknowledged: the broker lost track of the sequence.
        w.answered(Answer::OutOfOrder, 1.1);
        w.answered(Answer::OutOfOrder, 1.2);
        assert_eq!(
            w.end_round(),
            RoundEnd {
                failed: true,
                new_producer: true
            }
        );
        assert_eq!(
            w.pop_finished(),
            vec![
                acked(&[0, 1], 1.0),
                Finished::Abandoned { seqs: vec![2, 3] },
                Finished::Abandoned { seqs: vec![4, 5] },
            ]
        );
        assert!(w.has_room());
    }

    #[test]
    fn a_broken_connection_puts_every_request_in_flight_in_doubt() {
        let mut w = window(3);
        send_all(&mut w);
        w.answered(Answer::Acked, 1.0);
        assert_eq!(w.broken(), vec![2, 3, 4, 5]);
        assert_eq!(w.in_flight(), 0);
        assert!(w.end_round().failed);
        assert_eq!(send_all(&mut w), vec![1, 2]);
    }

    #[test]
    fn a_fatal_answer_mid_round_still_takes_the_later_answers() {
        let mut w = window(2);
        send_all(&mut w);
        w.answered(Answer::Fatal, 1.0);
        // The next batch was written anyway (its answer is read before the round ends).
        w.answered(Answer::Acked, 1.1);
        let end = w.end_round();
        assert!(end.new_producer);
        assert_eq!(
            w.pop_finished(),
            vec![
                Finished::Abandoned { seqs: vec![0, 1] },
                acked(&[2, 3], 1.1)
            ]
        );
    }

    #[test]
    fn without_idempotence_one_batch_at_a_time() {
        let mut w: Window<u64> = Window::new(1);
        w.push(vec![0], 0);
        assert!(!w.has_room());
    }
}
