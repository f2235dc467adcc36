//! A selection of one's own generations as one ZIP (the history's
//! "Download selected"), streamed while it is written: the images in the
//! order asked, named `TOOL-SHORTID-N.EXT`, then `metadata.json` with each
//! image's generation, prompt, parameters, model, LoRAs and seed (the same
//! description a collection export gives).
//!
//! Bounded: at most [`MAX_DOWNLOAD_GENERATIONS`] generations per download,
//! about two images in memory at a time, and the body goes out in chunks
//! through a small channel, so a slow client slows the writer instead of
//! filling memory. Owner-only: a generation of someone else is "not found",
//! for an administrator too (they have the operator's tools for that).

use std::io::Write;

use serde_json::{Value, json};
use station_store::{AccountRow, MediaRow, StoreError};
use tokio::sync::mpsc;
use tracing::warn;

use crate::Station;
use crate::jobs::JobAccessError;

/// The most generations one download may hold.
pub const MAX_DOWNLOAD_GENERATIONS: usize = 100;

/// Bytes collected before a chunk of the ZIP is sent on.
const CHUNK: usize = 64 * 1024;

/// Why a download was refused.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The selection itself is unusable (empty, too long, nothing to download).
    #[error("ids: {0}")]
    Invalid(String),
    /// A generation is not the caller's, or does not exist.
    #[error(transparent)]
    Access(#[from] JobAccessError),
}

impl From<StoreError> for DownloadError {
    fn from(e: StoreError) -> DownloadError {
        DownloadError::Access(e.into())
    }
}

/// A download being written.
#[derive(Debug)]
pub struct GenerationsZip {
    /// What to call the file: `station-N-images.zip`.
    pub file_name: String,
    /// How many images it holds.
    pub images: usize,
    /// The ZIP's bytes in order, as they are written; an `Err` (a stored
    /// image could not be read) ends it, so a broken download is never
    /// mistaken for a whole one.
    pub chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
}

/// A `Write` that hands its bytes to the channel in chunks of [`CHUNK`].
struct ChunkWriter {
    tx: mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the download was closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Writes the entries received (an `Err` aborts) as a stored ZIP to `out`.
fn stream_zip(
    mut entries: mpsc::Receiver<Result<(String, Vec<u8>), String>>,
    out: mpsc::Sender<std::io::Result<Vec<u8>>>,
) {
    let zip = zip::ZipWriter::new_stream(ChunkWriter { tx: out.clone(), buf: Vec::with_capacity(CHUNK) });
    if let Err(e) = write_entries(zip, &mut entries) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            warn!(error = %e, "writing a download of generations failed");
        }
        let _ = out.blocking_send(Err(e));
    }
}

/// Writes each entry received into `zip` (an `Err` entry aborts) and finishes it.
fn write_entries(
    mut zip: zip::ZipWriter<zip::write::StreamWriter<ChunkWriter>>,
    entries: &mut mpsc::Receiver<Result<(String, Vec<u8>), String>>,
) -> std::io::Result<()> {
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    while let Some(entry) = entries.blocking_recv() {
        let (name, bytes) = entry.map_err(std::io::Error::other)?;
        zip.start_file(name.as_str(), stored).map_err(std::io::Error::other)?;
        zip.write_all(&bytes)?;
    }
    let mut w = zip.finish().map_err(std::io::Error::other)?;
    w.flush()
}

impl Station {
    /// Starts a ZIP of the images of generations `ids` (full ids, in the
    /// order given, repeats ignored), all of which must be `account`'s own.
    /// Everything is checked before the first byte: a refusal is an error
    /// here, never a broken file.
    pub async fn download_generations(
        &self,
        account: &AccountRow,
        ids: &[String],
    ) -> Result<GenerationsZip, DownloadError> {
        let mut unique: Vec<&str> = vec![];
        for id in ids.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
            if !unique.contains(&id) {
                unique.push(id);
            }
        }
        if unique.is_empty() {
            return Err(DownloadError::Invalid("select at least one generation".into()));
        }
        if unique.len() > MAX_DOWNLOAD_GENERATIONS {
            return Err(DownloadError::Invalid(format!(
                "at most {MAX_DOWNLOAD_GENERATIONS} generations per download ({} selected); download them in parts",
                unique.len()
            )));
        }
        let mut files: Vec<(String, MediaRow)> = vec![];
        for id in unique {
            let job = match self.store.get_job(id).await? {
                Some(j) if j.account_id == account.id => j,
                _ => return Err(JobAccessError::NotFound(id.to_string()).into()),
            };
            let short = self.short_job_id(&job.id).await?;
            for (n, m) in self.job_outputs(&job).await?.into_iter().enumerate() {
                let ext = crate::media::extension_for_mime(&m.mime);
                files.push((format!("{}-{short}-{}.{ext}", job.tool_id, n + 1), m));
            }
        }
        if files.is_empty() {
            return Err(DownloadError::Invalid(
                "none of the selected generations has a finished image to download".into(),
            ));
        }
        let images = files.len();
        let (out_tx, out_rx) = mpsc::channel(4);
        let (entry_tx, entry_rx) = mpsc::channel(1);
        tokio::task::spawn_blocking(move || stream_zip(entry_rx, out_tx));
        let station = self.clone();
        tokio::spawn(async move {
            let mut described = vec![];
            for (name, m) in files {
                let bytes = match station.media.get(&m.id, None).await {
                    Ok((_, b)) => b,
                    Err(e) => {
                        let _ = entry_tx.send(Err(format!("{name}: {e}"))).await;
                        return;
                    }
                };
                let mut meta = match station.image_metadata(&m).await {
                    Ok(meta) => meta,
                    Err(e) => {
                        let _ = entry_tx.send(Err(format!("{name}: {e}"))).await;
                        return;
                    }
                };
                meta.insert("file".into(), json!(name));
                described.push(Value::Object(meta));
                if entry_tx.send(Ok((name, bytes))).await.is_err() {
                    return; // the client went away
                }
            }
            let text = serde_json::to_vec_pretty(&json!({ "images": described })).unwrap_or_default();
            let _ = entry_tx.send(Ok(("metadata.json".into(), text))).await;
        });
        Ok(GenerationsZip { file_name: format!("station-{images}-images.zip"), images, chunks: out_rx })
    }
}
