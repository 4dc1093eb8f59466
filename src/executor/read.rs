//! The framing thread: reads the shards' files into chunks of whole batches.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};

use super::prefetch::{self, Prefetch};
use super::shared::{CHUNK_BYTES, Event, POLL, RawBatch, RawItem, Run, chunk_instances};
use crate::record::{RawReader, RecordErrorKind};
use crate::storage::Storage;

impl Run<'_> {
    /// The framing thread: reads the shards' files into batches.
    pub(super) fn read(
        &self,
        shards: &[usize],
        work: SyncSender<RawBatch>,
        done: SyncSender<(u64, Event)>,
        tokens: Receiver<()>,
    ) {
        let mut seq = 0u64;
        let send_event = |seq: &mut u64, event: Event| {
            let ok = done.send((*seq, event)).is_ok();
            *seq += 1;
            ok
        };
        let options = self.executor.config.read_options;
        let batch_size = self.plan.batch_size;
        // Fixed chunks where a chunk may end inside a batch by the batch
        // byte limit, so that the batches stay the same from run to run; and
        // with adaptive batches, whose ceiling a chunk is.
        let fixed =
            self.executor.config.adaptive_batch || self.executor.config.max_batch_bytes.is_some();
        // With a byte limit on batches, chunks hold no more either, so that
        // memory stays within workers × the limit.
        let max_chunk_bytes = self.executor.config.max_batch_bytes.unwrap_or(usize::MAX);
        // Small whole objects are fetched ahead, in the order read below.
        let small: Vec<String> = shards
            .iter()
            .filter(|&&shard| self.plan.shards[shard].byte_range.is_none())
            .flat_map(|&shard| &self.plan.inputs[self.plan.shards[shard].inputs.clone()])
            .filter(|meta| meta.size <= prefetch::MAX_BYTES)
            .map(|meta| meta.location.clone())
            .collect();
        let mut ahead = Prefetch::start(Arc::clone(&self.executor.storage), small);
        for &shard in shards {
            if self.stopping() || !send_event(&mut seq, Event::ShardStart { shard }) {
                return;
            }
            let byte_range = self.plan.shards[shard].byte_range.clone();
            for meta in &self.plan.inputs[self.plan.shards[shard].inputs.clone()] {
                let location = meta.location.as_str();
                let storage = &self.executor.storage;
                let opened = match &byte_range {
                    // A range's reader starts one byte early, to find where
                    // the first line that starts in the range begins.
                    Some(range) => storage.open_at(location, range.start.saturating_sub(1)),
                    None => ahead
                        .as_mut()
                        .and_then(|a| a.take(location, &|| self.stopping()))
                        .unwrap_or_else(|| storage.open(location)),
                };
                let framed = opened.map_err(|e| e.to_string()).and_then(|r| {
                    match &byte_range {
                        // The last range reads to the file's end as it is
                        // now, as an unsplit file is read.
                        Some(range) => RawReader::new_range(
                            self.framing(),
                            location,
                            r,
                            options,
                            range.start..if range.end >= meta.size {
                                u64::MAX
                            } else {
                                range.end
                            },
                        ),
                        None => RawReader::new(self.framing(), location, r, options),
                    }
                    .map_err(|e| e.to_string())
                });
                let mut reader = match framed {
                    Ok(mut reader) => {
                        reader.defer_data_checksums();
                        reader
                    }
                    Err(message) => {
                        send_event(&mut seq, Event::Fatal(message));
                        return;
                    }
                };
                let source: Arc<str> = Arc::from(location);
                let mut consumed = 0;
                loop {
                    // Whole batches per chunk, at least one: about
                    // CHUNK_WORK of a worker's time, or CHUNK_INSTANCES.
                    let chunk_instances = if fixed {
                        chunk_instances(batch_size)
                    } else {
                        self.chunk_cost.chunk_instances(batch_size)
                    };
                    // Damaged records ride along, but not without bound.
                    let max_items = chunk_instances.saturating_mul(2).max(64);
                    let mut batch = RawBatch {
                        seq: 0,
                        source: Arc::clone(&source),
                        data: self.raw_buffers.take(),
                        items: {
                            let mut items = self.item_lists.take();
                            items.reserve(chunk_instances.min(4096));
                            items
                        },
                        instances: 0,
                        bytes: 0,
                    };
                    let mut ended = false;
                    // The bytes of the chunk's records: its data also holds
                    // the framing copied along with runs of records (line
                    // endings, TFRecord headers), which the limits ignore.
                    let mut record_bytes = 0;
                    loop {
                        let at_boundary = batch.instances.is_multiple_of(batch_size);
                        let full = batch.instances >= chunk_instances
                            || (at_boundary && batch.instances > 0 && record_bytes >= CHUNK_BYTES)
                            || record_bytes >= max_chunk_bytes
                            || batch.items.len() >= max_items;
                        if full {
                            break;
                        }
                        // The records whole in the read buffer, in one go,
                        // up to the next batch boundary and within the
                        // chunk's limits; the per-record path for anything
                        // else. Either way the chunk ends where it would if
                        // every record were read alone.
                        let to_boundary = batch_size - batch.instances % batch_size;
                        let most = to_boundary
                            .min(chunk_instances - batch.instances)
                            .min(max_items - batch.items.len());
                        let room = max_chunk_bytes - record_bytes;
                        let items = &mut batch.items;
                        let ran =
                            reader.read_run(&mut batch.data, most, room, |position, range, crc| {
                                record_bytes += range.len();
                                items.push(RawItem::Record {
                                    position,
                                    range,
                                    crc,
                                });
                            });
                        if ran > 0 {
                            batch.instances += ran;
                            continue;
                        }
                        let start = batch.data.len();
                        match reader.read_into(&mut batch.data) {
                            None => {
                                ended = true;
                                break;
                            }
                            Some(Ok(position)) => {
                                record_bytes += batch.data.len() - start;
                                batch.items.push(RawItem::Record {
                                    position,
                                    range: start..batch.data.len(),
                                    crc: reader.take_data_checksum(),
                                });
                                batch.instances += 1;
                            }
                            Some(Err(e)) if matches!(e.kind, RecordErrorKind::Io(_)) => {
                                // The storage failed, not the file: the rest of it was never read.
                                let message = format!("cannot read {location:?}: {}", e.message());
                                self.raw_buffers.give(batch.data);
                                self.item_lists.give(batch.items);
                                send_event(&mut seq, Event::Fatal(message));
                                return;
                            }
                            Some(Err(e)) => batch.items.push(RawItem::Damaged(Box::new(e))),
                        }
                    }
                    let now = reader.bytes_read();
                    batch.bytes = now - consumed;
                    consumed = now;
                    if batch.items.is_empty() && batch.bytes == 0 {
                        self.raw_buffers.give(batch.data);
                        self.item_lists.give(batch.items);
                    } else {
                        // Wait for room in the window of batches in flight.
                        loop {
                            match tokens.recv_timeout(POLL) {
                                Ok(()) => break,
                                Err(RecvTimeoutError::Timeout) if !self.stopping() => {}
                                Err(_) => return,
                            }
                        }
                        batch.seq = seq;
                        seq += 1;
                        if work.send(batch).is_err() {
                            return;
                        }
                    }
                    if ended {
                        break;
                    }
                    if self.stopping() {
                        return;
                    }
                }
            }
            if !send_event(&mut seq, Event::ShardEnd { shard }) {
                return;
            }
        }
    }
}
