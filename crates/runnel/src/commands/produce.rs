//! `runnel produce TOPIC`: reads lines from stdin and produces them as records.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use runnel_client::partitioner::partition_for_key;
use runnel_client::{acks, Compression, ProducerRecord};
use tokio::sync::mpsc;

use runnel_lab::cli::Acks;

use super::{explain, ConnectArgs};

/// Flush a batch after this many lines...
const MAX_BATCH_RECORDS: usize = 1000;
/// ...or this many bytes...
const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// ...or when no new line arrives for this long (so interactive input is sent promptly).
const LINGER: Duration = Duration::from_millis(100);

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CompressionArg {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Snappy => Compression::Snappy,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct ProduceArgs {
    /// Topic to produce to.
    topic: String,
    /// Send every record to this partition (default: by key, keyless records round-robin).
    #[arg(long, short = 'p', value_name = "N")]
    partition: Option<i32>,
    /// Split each line at the first SEP into key and value (default: the whole line is the
    /// value, with no key).
    #[arg(long, short = 'k', value_name = "SEP")]
    key_separator: Option<String>,
    /// Acknowledgements to wait for.
    #[arg(long, value_enum, default_value = "all")]
    acks: Acks,
    /// Compression codec for record batches.
    #[arg(long, value_enum, default_value = "none")]
    compression: CompressionArg,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub(crate) async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    if args.key_separator.as_deref() == Some("") {
        bail!("--key-separator must not be empty");
    }
    let mut client = args.conn.connect().await?;
    let topic = client.topic_metadata(&args.topic).await.map_err(explain)?;
    let num_partitions = topic.partitions.len() as i32;
    if num_partitions == 0 {
        bail!("topic '{}' has no partitions", args.topic);
    }
    if let Some(p) = args.partition {
        if !(0..num_partitions).contains(&p) {
            bail!(
                "topic '{}' has partitions 0..{} — --partition {p} does not exist",
                args.topic,
                num_partitions - 1
            );
        }
    }
    let acks = args.acks.code();
    let compression = Compression::from(args.compression);
    let separator = args.key_separator.map(String::into_bytes);

    // Read stdin on a blocking thread; lines arrive over a channel so we can flush a partial
    // batch when input pauses.
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Vec<u8>>>(MAX_BATCH_RECORDS);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        loop {
            let mut line = Vec::new();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    if tx.blocking_send(Ok(line)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });

    let mut batcher = Batcher {
        num_partitions,
        fixed_partition: args.partition,
        // Start keyless records at a pseudo-random partition so that many short-lived
        // producers do not all pile onto partition 0.
        next_round_robin: start_partition(num_partitions),
        records: Vec::new(),
        bytes: 0,
    };
    let mut produced: u64 = 0;
    loop {
        let next = if batcher.records.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(LINGER, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    produced += batcher
                        .flush(&mut client, &args.topic, acks, compression)
                        .await?;
                    continue;
                }
            }
        };
        let Some(line) = next else { break };
        let line = line.context("cannot read stdin")?;
        batcher.push(make_record(line, separator.as_deref()));
        if batcher.records.len() >= MAX_BATCH_RECORDS || batcher.bytes >= MAX_BATCH_BYTES {
            produced += batcher
                .flush(&mut client, &args.topic, acks, compression)
                .await?;
        }
    }
    produced += batcher
        .flush(&mut client, &args.topic, acks, compression)
        .await?;
    let noun = if produced == 1 { "record" } else { "records" };
    if acks == acks::NONE {
        eprintln!(
            "sent {produced} {noun} to {} (acks=0: not confirmed)",
            args.topic
        );
    } else {
        eprintln!("produced {produced} {noun} to {}", args.topic);
    }
    Ok(())
}

/// Splits a line into key and value at the first separator; lines without the separator
/// have no key.
fn make_record(line: Vec<u8>, separator: Option<&[u8]>) -> ProducerRecord {
    if let Some(sep) = separator {
        if let Some(pos) = find(&line, sep) {
            let line = Bytes::from(line);
            return ProducerRecord {
                key: Some(line.slice(..pos)),
                value: Some(line.slice(pos + sep.len()..)),
                ..ProducerRecord::default()
            };
        }
    }
    ProducerRecord::value(line)
}

fn start_partition(num_partitions: i32) -> i32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (nanos % num_partitions as u32) as i32
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Batcher {
    num_partitions: i32,
    fixed_partition: Option<i32>,
    next_round_robin: i32,
    records: Vec<ProducerRecord>,
    bytes: usize,
}

impl Batcher {
    fn push(&mut self, record: ProducerRecord) {
        self.bytes += record.key.as_ref().map_or(0, Bytes::len)
            + record.value.as_ref().map_or(0, Bytes::len)
            + 16;
        self.records.push(record);
    }

    /// Assigns each record of the batch a partition: the fixed one, else by key hash, else
    /// (keyless) one round-robin partition for the whole batch.
    fn assign(&mut self) -> BTreeMap<i32, Vec<ProducerRecord>> {
        let keyless_partition = self.next_round_robin % self.num_partitions;
        let mut used_keyless = false;
        let mut by_partition: BTreeMap<i32, Vec<ProducerRecord>> = BTreeMap::new();
        for record in self.records.drain(..) {
            let partition = match (self.fixed_partition, &record.key) {
                (Some(p), _) => p,
                (None, Some(key)) => partition_for_key(key, self.num_partitions),
                (None, None) => {
                    used_keyless = true;
                    keyless_partition
                }
            };
            by_partition.entry(partition).or_default().push(record);
        }
        if used_keyless {
            self.next_round_robin = (self.next_round_robin + 1) % self.num_partitions;
        }
        self.bytes = 0;
        by_partition
    }

    async fn flush(
        &mut self,
        client: &mut runnel_client::Client,
        topic: &str,
        acks: i16,
        compression: Compression,
    ) -> anyhow::Result<u64> {
        if self.records.is_empty() {
            return Ok(0);
        }
        let mut count = 0;
        for (partition, records) in self.assign() {
            client
                .produce(topic, partition, &records, acks, compression)
                .await
                .map_err(explain)
                .with_context(|| {
                    format!(
                        "cannot produce {} records to partition {partition}",
                        records.len()
                    )
                })?;
            count += records.len() as u64;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_key_at_first_separator() {
        let r = make_record(b"k1:v:1".to_vec(), Some(b":"));
        assert_eq!(r.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:1"[..]));
        let r = make_record(b"no-separator".to_vec(), Some(b"::"));
        assert_eq!(r.key, None);
        assert_eq!(r.value.as_deref(), Some(&b"no-separator"[..]));
        let r = make_record(b"a::b".to_vec(), Some(b"::"));
        assert_eq!(r.key.as_deref(), Some(&b"a"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"b"[..]));
        let r = make_record(b"plain".to_vec(), None);
        assert_eq!(r.key, None);
    }

    #[test]
    fn keyed_records_hash_and_keyless_round_robin_per_batch() {
        let mut b = Batcher {
            num_partitions: 3,
            fixed_partition: None,
            next_round_robin: 0,
            records: Vec::new(),
            bytes: 0,
        };
        b.push(ProducerRecord::value("x"));
        b.push(ProducerRecord::value("y"));
        b.push(ProducerRecord::key_value("21", "v"));
        let first = b.assign();
        // Both keyless records go to partition 0; "21" hashes to partition 0 of 3 as well
        // (toPositive(murmur2("21")) = 1173551340, and 1173551340 % 3 = 0).
        assert_eq!(first.get(&0).map(Vec::len), Some(3));
        b.push(ProducerRecord::value("z"));
        let second = b.assign();
        assert_eq!(second.keys().copied().collect::<Vec<_>>(), vec![1]);
        b.push(ProducerRecord::key_value("foobar", "v"));
        let keyed_only = b.assign();
        // No keyless records: the round-robin position does not advance.
        assert_eq!(b.next_round_robin, 2);
        let expected = partition_for_key(b"foobar", 3);
        assert_eq!(
            keyed_only.keys().copied().collect::<Vec<_>>(),
            vec![expected]
        );
    }

    #[test]
    fn fixed_partition_wins() {
        let mut b = Batcher {
            num_partitions: 4,
            fixed_partition: Some(2),
            next_round_robin: 0,
            records: Vec::new(),
            bytes: 0,
        };
        b.push(ProducerRecord::key_value("21", "v"));
        b.push(ProducerRecord::value("x"));
        let m = b.assign();
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(m[&2].len(), 2);
    }
}
