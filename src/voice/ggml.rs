//! whisper.cpp's legacy `ggml` model file: what `convert-pt-to-ggml.py` writes and
//! `whisper_model_load` reads.
//!
//! Layout (all integers i32 little-endian): magic 0x67676d6c; hparams n_vocab,
//! n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer, n_text_ctx,
//! n_text_state, n_text_head, n_text_layer, n_mels, ftype; mel filters (n_mel,
//! n_fft, n_mel*n_fft f32); vocabulary (count, then length + bytes per token);
//! then tensors until end of file: n_dims, name length, ttype (0 f32, 1 f16), the
//! dims innermost first, the name, the data. No alignment or padding anywhere.
//!
//! Besides the writer there is a reader of everything but the tensor data, so a
//! converted file can be verified without loading it into whisper.cpp.

use std::io::{Read, Seek, SeekFrom, Write};

pub const MAGIC: u32 = 0x6767_6d6c;

#[derive(Debug, thiserror::Error)]
pub enum GgmlError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("ggml file: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct HParams {
    pub n_vocab: i32,
    pub n_audio_ctx: i32,
    pub n_audio_state: i32,
    pub n_audio_head: i32,
    pub n_audio_layer: i32,
    pub n_text_ctx: i32,
    pub n_text_state: i32,
    pub n_text_head: i32,
    pub n_text_layer: i32,
    pub n_mels: i32,
    /// 1: big tensors are f16 (what the converter writes).
    pub ftype: i32,
}

impl HParams {
    fn fields(&self) -> [i32; 11] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
            self.ftype,
        ]
    }
}

/// Tensor element types whisper.cpp accepts in this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    F32 = 0,
    F16 = 1,
}

impl TensorType {
    pub fn size(self) -> usize {
        match self {
            TensorType::F32 => 4,
            TensorType::F16 => 2,
        }
    }
}

/// Streams a ggml file: header, filters and vocabulary first, then one tensor at a time.
pub struct GgmlWriter<W: Write> {
    out: W,
    tensors: usize,
}

impl<W: Write> GgmlWriter<W> {
    pub fn new(
        mut out: W,
        hparams: &HParams,
        filters: &MelFilters,
        vocab: &[Vec<u8>],
    ) -> Result<GgmlWriter<W>, GgmlError> {
        out.write_all(&MAGIC.to_le_bytes())?;
        for v in hparams.fields() {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&len_i32(filters.n_mel)?.to_le_bytes())?;
        out.write_all(&len_i32(filters.n_fft)?.to_le_bytes())?;
        if filters.data.len() != filters.n_mel * filters.n_fft {
            return Err(GgmlError::Invalid("mel filter data does not match its shape".into()));
        }
        for v in &filters.data {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&len_i32(vocab.len())?.to_le_bytes())?;
        for token in vocab {
            out.write_all(&len_i32(token.len())?.to_le_bytes())?;
            out.write_all(token)?;
        }
        Ok(GgmlWriter { out, tensors: 0 })
    }

    /// `dims` in PyTorch order (outermost first); the file stores them reversed.
    pub fn tensor(&mut self, name: &str, dims: &[usize], ttype: TensorType, data: &[u8]) -> Result<(), GgmlError> {
        let elements: usize = dims.iter().product();
        if elements * ttype.size() != data.len() {
            return Err(GgmlError::Invalid(format!("{name}: {} bytes for {dims:?} of {ttype:?}", data.len())));
        }
        self.out.write_all(&len_i32(dims.len())?.to_le_bytes())?;
        self.out.write_all(&len_i32(name.len())?.to_le_bytes())?;
        self.out.write_all(&(ttype as i32).to_le_bytes())?;
        for d in dims.iter().rev() {
            self.out.write_all(&len_i32(*d)?.to_le_bytes())?;
        }
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(data)?;
        self.tensors += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<(W, usize), GgmlError> {
        self.out.flush()?;
        Ok((self.out, self.tensors))
    }
}

fn len_i32(n: usize) -> Result<i32, GgmlError> {
    i32::try_from(n).map_err(|_| GgmlError::Invalid(format!("{n} does not fit the format's 32-bit fields")))
}

#[derive(Debug, Clone, PartialEq)]
pub struct MelFilters {
    pub n_mel: usize,
    pub n_fft: usize,
    /// Row-major n_mel x n_fft.
    pub data: Vec<f32>,
}

/// One tensor's header as read back from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// PyTorch order (outermost first), as given to the writer.
    pub dims: Vec<usize>,
    pub ttype: TensorType,
}

/// Everything in a ggml file except the tensor data.
#[derive(Debug, Clone)]
pub struct GgmlSummary {
    pub hparams: HParams,
    pub filters: MelFilters,
    pub vocab: Vec<Vec<u8>>,
    pub tensors: Vec<TensorInfo>,
}

impl GgmlSummary {
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Reads a ggml file's structure, seeking over tensor data; every length is checked
/// against the file's size so a bad file is an error, not a huge allocation.
pub fn read_summary<R: Read + Seek>(mut input: R) -> Result<GgmlSummary, GgmlError> {
    let size = input.seek(SeekFrom::End(0))?;
    input.seek(SeekFrom::Start(0))?;
    let mut pos: u64 = 0;
    let i32_at = |input: &mut R, pos: &mut u64| -> Result<i32, GgmlError> {
        let mut b = [0u8; 4];
        input.read_exact(&mut b)?;
        *pos += 4;
        Ok(i32::from_le_bytes(b))
    };
    let bounded = |v: i32, what: &str, pos: u64, unit: u64| -> Result<usize, GgmlError> {
        let n = u64::try_from(v).map_err(|_| GgmlError::Invalid(format!("negative {what}")))?;
        if n.saturating_mul(unit) > size.saturating_sub(pos) {
            return Err(GgmlError::Invalid(format!("{what} {n} runs past the end of the file")));
        }
        usize::try_from(n).map_err(|_| GgmlError::Invalid(format!("{what} too large")))
    };
    if i32_at(&mut input, &mut pos)? as u32 != MAGIC {
        return Err(GgmlError::Invalid("bad magic (not a whisper.cpp ggml model)".into()));
    }
    let mut f = [0i32; 11];
    for v in f.iter_mut() {
        *v = i32_at(&mut input, &mut pos)?;
    }
    let hparams = HParams {
        n_vocab: f[0],
        n_audio_ctx: f[1],
        n_audio_state: f[2],
        n_audio_head: f[3],
        n_audio_layer: f[4],
        n_text_ctx: f[5],
        n_text_state: f[6],
        n_text_head: f[7],
        n_text_layer: f[8],
        n_mels: f[9],
        ftype: f[10],
    };
    let v = i32_at(&mut input, &mut pos)?;
    let n_mel = bounded(v, "mel count", pos, 1)?;
    let v = i32_at(&mut input, &mut pos)?;
    let n_fft = bounded(v, "fft bins", pos, 1)?;
    let count = n_mel.checked_mul(n_fft).ok_or_else(|| GgmlError::Invalid("mel filter size".into()))?;
    bounded(i32::try_from(count).unwrap_or(i32::MAX), "mel filter size", pos, 4)?;
    let mut raw = vec![0u8; count * 4];
    input.read_exact(&mut raw)?;
    pos += raw.len() as u64;
    let data = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let filters = MelFilters { n_mel, n_fft, data };
    let v = i32_at(&mut input, &mut pos)?;
    let n_tokens = bounded(v, "vocabulary size", pos, 4)?;
    let mut vocab = Vec::with_capacity(n_tokens);
    for _ in 0..n_tokens {
        let v = i32_at(&mut input, &mut pos)?;
        let len = bounded(v, "token length", pos, 1)?;
        let mut token = vec![0u8; len];
        input.read_exact(&mut token)?;
        pos += len as u64;
        vocab.push(token);
    }
    let mut tensors = Vec::new();
    while pos < size {
        let n_dims = i32_at(&mut input, &mut pos)?;
        if !(1..=4).contains(&n_dims) {
            return Err(GgmlError::Invalid(format!("tensor with {n_dims} dimensions")));
        }
        let v = i32_at(&mut input, &mut pos)?;
        let name_len = bounded(v, "tensor name length", pos, 1)?;
        let ttype = match i32_at(&mut input, &mut pos)? {
            0 => TensorType::F32,
            1 => TensorType::F16,
            t => return Err(GgmlError::Invalid(format!("tensor type {t} (only f32 and f16 are written)"))),
        };
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            let v = i32_at(&mut input, &mut pos)?;
            dims.push(bounded(v, "tensor dimension", 0, 0)?);
        }
        dims.reverse();
        let mut name = vec![0u8; name_len];
        input.read_exact(&mut name)?;
        pos += name_len as u64;
        let name = String::from_utf8(name).map_err(|_| GgmlError::Invalid("tensor name is not UTF-8".into()))?;
        let bytes = dims
            .iter()
            .try_fold(ttype.size() as u64, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| GgmlError::Invalid(format!("{name}: size overflows")))?;
        if bytes > size - pos {
            return Err(GgmlError::Invalid(format!("{name}: data runs past the end of the file")));
        }
        pos += bytes;
        input.seek(SeekFrom::Start(pos))?;
        tensors.push(TensorInfo { name, dims, ttype });
    }
    Ok(GgmlSummary { hparams, filters, vocab, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn round_trip_and_truncations() {
        let hp = HParams { n_vocab: 3, n_mels: 2, ftype: 1, ..HParams::default() };
        let filters = MelFilters { n_mel: 2, n_fft: 3, data: vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5] };
        let vocab = vec![b"a".to_vec(), b"\xffb".to_vec(), Vec::new()];
        let mut w = GgmlWriter::new(Vec::new(), &hp, &filters, &vocab).unwrap();
        w.tensor("x.weight", &[2, 3], TensorType::F16, &[0u8; 12]).unwrap();
        w.tensor("x.bias", &[2, 1], TensorType::F32, &[0u8; 8]).unwrap();
        assert!(w.tensor("bad", &[2], TensorType::F32, &[0u8; 3]).is_err());
        let (bytes, n) = w.finish().unwrap();
        assert_eq!(n, 2);
        assert_eq!(&bytes[..4], &[0x6c, 0x6d, 0x67, 0x67]);
        let s = read_summary(Cursor::new(&bytes)).unwrap();
        assert_eq!(s.hparams, hp);
        assert_eq!(s.filters, filters);
        assert_eq!(s.vocab, vocab);
        assert_eq!(s.tensor("x.weight").unwrap().dims, vec![2, 3]);
        assert_eq!(s.tensor("x.bias").unwrap().ttype, TensorType::F32);
        // A cut at a tensor boundary is a well-formed file with fewer tensors; any
        // other cut must be an error.
        for cut in 0..bytes.len() {
            if let Ok(s) = read_summary(Cursor::new(&bytes[..cut])) {
                assert!(s.tensors.len() < 2, "cut at {cut} read as complete");
            }
        }
    }
}
