//! `runnel consume TOPIC`: reads records and prints them to stdout.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use runnel_client::{offset_spec, Client, ConsumedRecord, Error, ResponseError};

use super::{explain, is_broken_pipe, ConnectArgs};

/// How long one Fetch may wait on the broker for new data.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// Upper bound on bytes per Fetch (per partition and per response).
const FETCH_MAX_BYTES: i32 = 4 * 1024 * 1024;

#[derive(clap::Args)]
pub(crate) struct ConsumeArgs {
    /// Topic to consume from.
    topic: String,
    /// Only read this partition (default: all partitions).
    #[arg(long, short = 'p', value_name = "N")]
    partition: Option<i32>,
    /// Start at the earliest offset (same as --offset earliest).
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Where to start in each partition: an offset number, `earliest` or `latest`.
    #[arg(
        long,
        short = 'o',
        value_name = "N|earliest|latest",
        default_value = "latest"
    )]
    offset: StartOffset,
    /// Stop after printing this many records.
    #[arg(long, short = 'n', value_name = "N")]
    max: Option<u64>,
    /// Output template: %k key, %v value, %p partition, %o offset, %t timestamp, %T topic,
    /// %% a percent sign; \n, \t and \\ escapes.
    #[arg(long, short = 'f', value_name = "FMT", default_value = "%v\\n")]
    format: String,
    /// Stop when no record has arrived for this long (default: run until Ctrl-C, or until
    /// --max records).
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    #[command(flatten)]
    conn: ConnectArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartOffset {
    Earliest,
    Latest,
    At(i64),
}

impl std::str::FromStr for StartOffset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "earliest" | "beginning" => Ok(Self::Earliest),
            "latest" | "end" => Ok(Self::Latest),
            n => match n.parse::<i64>() {
                Ok(o) if o >= 0 => Ok(Self::At(o)),
                _ => Err(format!(
                    "expected an offset (a non-negative number), `earliest` or `latest`, got '{s}'"
                )),
            },
        }
    }
}

/// A compiled `--format` template.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Literal(Vec<u8>),
    Key,
    Value,
    Partition,
    Offset,
    Timestamp,
    Topic,
}

fn parse_format(fmt: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut chars = fmt.chars();
    let push = |pieces: &mut Vec<Piece>, lit: &mut Vec<u8>, p: Piece| {
        if !lit.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(lit)));
        }
        pieces.push(p);
    };
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next() {
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('t') => Piece::Timestamp,
                    Some('T') => Piece::Topic,
                    Some('%') => {
                        lit.push(b'%');
                        continue;
                    }
                    Some(other) => bail!(
                        "unknown placeholder '%{other}' in --format (use %k %v %p %o %t %T or %%)"
                    ),
                    None => bail!("--format ends with a lone '%' (write %% for a percent sign)"),
                };
                push(&mut pieces, &mut lit, piece);
            }
            '\\' => match chars.next() {
                Some('n') => lit.push(b'\n'),
                Some('t') => lit.push(b'\t'),
                Some('r') => lit.push(b'\r'),
                Some('0') => lit.push(0),
                Some('\\') => lit.push(b'\\'),
                Some(other) => {
                    lit.push(b'\\');
                    let mut buf = [0u8; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
                None => lit.push(b'\\'),
            },
            other => {
                let mut buf = [0u8; 4];
                lit.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit));
    }
    Ok(pieces)
}

fn render(
    out: &mut Vec<u8>,
    pieces: &[Piece],
    topic: &str,
    partition: i32,
    record: &ConsumedRecord,
) {
    for piece in pieces {
        match piece {
            Piece::Literal(l) => out.extend_from_slice(l),
            Piece::Key => {
                if let Some(k) = &record.key {
                    out.extend_from_slice(String::from_utf8_lossy(k).as_bytes());
                }
            }
            Piece::Value => {
                if let Some(v) = &record.value {
                    out.extend_from_slice(String::from_utf8_lossy(v).as_bytes());
                }
            }
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(record.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(record.timestamp.to_string().as_bytes()),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
        }
    }
}

pub(crate) async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let pieces = parse_format(&args.format)?;
    if args.max == Some(0) {
        return Ok(());
    }
    let mut client = args.conn.connect().await?;
    let topic = client.topic_metadata(&args.topic).await.map_err(explain)?;
    let partitions: Vec<i32> = match args.partition {
        Some(p) => {
            if !topic.partitions.iter().any(|tp| tp.partition == p) {
                bail!(
                    "topic '{}' has partitions 0..{} — --partition {p} does not exist",
                    args.topic,
                    topic.partitions.len().saturating_sub(1)
                );
            }
            vec![p]
        }
        None => topic.partitions.iter().map(|p| p.partition).collect(),
    };
    let start = if args.from_beginning {
        StartOffset::Earliest
    } else {
        args.offset
    };

    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    for &p in &partitions {
        let offset = match start {
            StartOffset::At(o) => o,
            StartOffset::Earliest => {
                resolve(&mut client, &args.topic, p, offset_spec::EARLIEST).await?
            }
            StartOffset::Latest => {
                resolve(&mut client, &args.topic, p, offset_spec::LATEST).await?
            }
        };
        positions.insert(p, offset);
    }

    let timeout = args.timeout_ms.map(Duration::from_millis);
    let max_wait_ms = match timeout {
        Some(t) => FETCH_MAX_WAIT_MS.min(i32::try_from(t.as_millis()).unwrap_or(i32::MAX).max(1)),
        None => FETCH_MAX_WAIT_MS,
    };
    let mut printed: u64 = 0;
    let mut last_record = Instant::now();
    let mut failures: u32 = 0;
    let stdout = std::io::stdout();
    let mut out = Vec::with_capacity(64 * 1024);

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);

    'outer: loop {
        if let Some(t) = timeout {
            if last_record.elapsed() >= t {
                break;
            }
        }
        let request: Vec<(i32, i64)> = positions.iter().map(|(&p, &o)| (p, o)).collect();
        let fetched = tokio::select! {
            _ = &mut ctrl_c => break,
            r = client.fetch_partitions(&args.topic, &request, max_wait_ms, FETCH_MAX_BYTES) => r,
        };
        let fetched = match fetched {
            Ok(f) => {
                failures = 0;
                f
            }
            Err(e) if e.is_retriable() && failures < 10 => {
                failures += 1;
                tracing::warn!(error = %e, "fetch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                continue;
            }
            Err(e) => return Err(explain(e)),
        };
        for p in fetched {
            if let Some(e) = p.error {
                handle_partition_error(&mut client, &args.topic, p.partition, e, &mut positions)
                    .await?;
                continue;
            }
            positions.insert(p.partition, p.next_offset);
            for record in &p.records {
                render(&mut out, &pieces, &args.topic, p.partition, record);
                printed += 1;
                last_record = Instant::now();
                if args.max.is_some_and(|m| printed >= m) {
                    write_out(&stdout, &mut out)?;
                    break 'outer;
                }
            }
        }
        if !out.is_empty() && !write_out(&stdout, &mut out)? {
            return Ok(()); // stdout closed (e.g. piped into `head`)
        }
    }
    write_out(&stdout, &mut out)?;
    let noun = if printed == 1 { "record" } else { "records" };
    eprintln!("consumed {printed} {noun} from {}", args.topic);
    Ok(())
}

/// Writes and flushes `out`; returns `false` if stdout was closed.
fn write_out(stdout: &std::io::Stdout, out: &mut Vec<u8>) -> anyhow::Result<bool> {
    if out.is_empty() {
        return Ok(true);
    }
    let mut lock = stdout.lock();
    let result = lock.write_all(out).and_then(|()| lock.flush());
    out.clear();
    match result {
        Ok(()) => Ok(true),
        Err(e) if is_broken_pipe(&e) => Ok(false),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

async fn resolve(
    client: &mut Client,
    topic: &str,
    partition: i32,
    spec: i64,
) -> anyhow::Result<i64> {
    client
        .list_offsets(topic, partition, spec)
        .await
        .map_err(explain)
        .with_context(|| format!("cannot find the start offset of partition {partition}"))
}

async fn handle_partition_error(
    client: &mut Client,
    topic: &str,
    partition: i32,
    error: Error,
    positions: &mut BTreeMap<i32, i64>,
) -> anyhow::Result<()> {
    match error.kafka_error() {
        Some(ResponseError::OffsetOutOfRange) => {
            let earliest = resolve(client, topic, partition, offset_spec::EARLIEST).await?;
            let latest = resolve(client, topic, partition, offset_spec::LATEST).await?;
            let current = positions.get(&partition).copied().unwrap_or(0);
            // Before the log start: records were deleted; skip ahead. Past the end: wait at the end.
            let reset = if current < earliest { earliest } else { latest };
            eprintln!(
                "warning: offset {current} is out of range for partition {partition} \
                 (log {earliest}..{latest}); continuing from {reset}"
            );
            positions.insert(partition, reset);
            Ok(())
        }
        _ if error.is_retriable() => {
            tracing::warn!(%error, partition, "fetch error; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok(())
        }
        _ => Err(explain(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use runnel_client::TimestampType;

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            offset: 42,
            timestamp: 1_700_000_000_000,
            timestamp_type: TimestampType::Creation,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from_static(b"val\xff")),
            headers: Vec::new(),
        }
    }

    fn fmt(template: &str, r: &ConsumedRecord) -> String {
        let pieces = parse_format(template).unwrap();
        let mut out = Vec::new();
        render(&mut out, &pieces, "orders", 3, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn default_format_prints_value_lossily() {
        assert_eq!(fmt("%v\\n", &record()), "val\u{fffd}\n");
    }

    #[test]
    fn all_placeholders_and_escapes() {
        assert_eq!(
            fmt("%T/%p@%o %t\\t%k=%v 100%%\\\\", &record()),
            "orders/3@42 1700000000000\tkey=val\u{fffd} 100%\\"
        );
        let mut r = record();
        r.key = None;
        r.value = None;
        assert_eq!(fmt("[%k][%v]", &r), "[][]");
    }

    #[test]
    fn bad_formats_are_rejected() {
        assert!(parse_format("%x").is_err());
        assert!(parse_format("abc%").is_err());
    }

    #[test]
    fn start_offsets_parse() {
        assert_eq!(
            "earliest".parse::<StartOffset>().unwrap(),
            StartOffset::Earliest
        );
        assert_eq!(
            "latest".parse::<StartOffset>().unwrap(),
            StartOffset::Latest
        );
        assert_eq!("17".parse::<StartOffset>().unwrap(), StartOffset::At(17));
        assert!("-3".parse::<StartOffset>().is_err());
        assert!("soon".parse::<StartOffset>().is_err());
    }
}
