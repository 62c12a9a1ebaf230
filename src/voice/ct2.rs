//! A bounded reader for CTranslate2's `model.bin` (binary version 6), the format
//! faster-whisper conversions ship in.
//!
//! Layout: u32 version, a u16-length NUL-terminated spec name, u32 revision, u32
//! variable count, then per variable: name (u16 length, NUL-terminated), u8 rank,
//! rank x u32 dims, u8 dtype, u32 byte count, data; then u32 alias count and
//! (alias, target) name pairs. Every length is checked against the bytes that are
//! left, so a truncated or hostile file is an error, never a panic or a huge
//! allocation. The reader borrows the file's bytes: a model is tens of megabytes and
//! the converter only needs slices of it.

use std::collections::HashMap;

/// The only binary version this reader understands (faster-whisper conversions).
pub const SUPPORTED_VERSION: u32 = 6;
/// Real models have rank <= 3; anything beyond this is a corrupt file.
const MAX_RANK: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ct2Error {
    #[error("model.bin is truncated: {what} at byte {offset} needs {needed} bytes, {left} left")]
    Truncated { what: &'static str, offset: usize, needed: usize, left: usize },
    #[error("model.bin has binary version {0}; only version {SUPPORTED_VERSION} is supported")]
    Version(u32),
    #[error("model.bin: {0}")]
    Invalid(String),
}

/// Element types as CTranslate2 numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl DType {
    fn from_code(code: u8) -> Option<DType> {
        Some(match code {
            0 => DType::F32,
            1 => DType::I8,
            2 => DType::I16,
            3 => DType::I32,
            4 => DType::F16,
            5 => DType::Bf16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I16 | DType::F16 | DType::Bf16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// One named tensor (or scalar, rank 0) of the model, borrowing its bytes.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// A scalar (rank 0) or one-element integer variable, e.g. `encoder/num_heads`.
    pub fn as_integer(&self) -> Option<i64> {
        if self.elements() != 1 {
            return None;
        }
        let d = self.data;
        Some(match self.dtype {
            DType::I8 => i64::from(*d.first()? as i8),
            DType::I16 => i64::from(i16::from_le_bytes(d.get(..2)?.try_into().ok()?)),
            DType::I32 => i64::from(i32::from_le_bytes(d.get(..4)?.try_into().ok()?)),
            _ => return None,
        })
    }

    /// Every element as f32, whatever the stored float type.
    pub fn to_f32(&self) -> Result<Vec<f32>, Ct2Error> {
        let d = self.data;
        Ok(match self.dtype {
            DType::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            DType::F16 => d.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            DType::Bf16 => d.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            other => {
                return Err(Ct2Error::Invalid(format!(
                    "{} is {other:?}; quantized models are not supported (use a float16 conversion)",
                    self.name
                )))
            }
        })
    }
}

/// A parsed model.bin.
#[derive(Debug, Clone)]
pub struct Ct2Model<'a> {
    pub version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: Vec<Variable<'a>>,
    /// alias -> target, e.g. `decoder/projection/weight` -> `decoder/embeddings/weight`.
    pub aliases: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl<'a> Ct2Model<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Ct2Model<'a>, Ct2Error> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u32("version")?;
        if version != SUPPORTED_VERSION {
            return Err(Ct2Error::Version(version));
        }
        let spec = r.string("spec name")?;
        let revision = r.u32("spec revision")?;
        let count = r.u32("variable count")? as usize;
        // The smallest possible variable takes 2+1+1+1+4 bytes; a larger count than
        // that allows is a lie, and must not size an allocation.
        if count > r.left() / 9 {
            return Err(Ct2Error::Invalid(format!("{count} variables cannot fit in {} bytes", r.left())));
        }
        let mut variables = Vec::with_capacity(count);
        let mut index = HashMap::with_capacity(count);
        for _ in 0..count {
            let name = r.string("variable name")?;
            let rank = usize::from(r.u8("rank")?);
            if rank > MAX_RANK {
                return Err(Ct2Error::Invalid(format!("{name} has rank {rank}")));
            }
            let mut dims = Vec::with_capacity(rank);
            for _ in 0..rank {
                dims.push(r.u32("dimension")? as usize);
            }
            let code = r.u8("dtype")?;
            let dtype =
                DType::from_code(code).ok_or_else(|| Ct2Error::Invalid(format!("{name} has unknown dtype {code}")))?;
            let nbytes = r.u32("byte count")? as usize;
            let expected = dims
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| Ct2Error::Invalid(format!("{name}: dimensions {dims:?} overflow")))?;
            if expected != nbytes {
                return Err(Ct2Error::Invalid(format!(
                    "{name}: {nbytes} bytes for dimensions {dims:?} of {dtype:?} (expected {expected})"
                )));
            }
            let data = r.take(nbytes, "variable data")?;
            if index.insert(name.clone(), variables.len()).is_some() {
                return Err(Ct2Error::Invalid(format!("variable {name} appears twice")));
            }
            variables.push(Variable { name, dims, dtype, data });
        }
        let mut aliases = Vec::new();
        // Older writers may end right after the variables; an absent alias table is empty.
        if r.left() > 0 {
            let n = r.u32("alias count")? as usize;
            if n > r.left() / 4 {
                return Err(Ct2Error::Invalid(format!("{n} aliases cannot fit in {} bytes", r.left())));
            }
            for _ in 0..n {
                let alias = r.string("alias")?;
                let target = r.string("alias target")?;
                aliases.push((alias, target));
            }
        }
        Ok(Ct2Model { version, spec, revision, variables, aliases, index })
    }

    pub fn get(&self, name: &str) -> Option<&Variable<'a>> {
        self.index.get(name).and_then(|&i| self.variables.get(i))
    }

    /// A variable that must be there, as a conversion error when it is not.
    pub fn require(&self, name: &str) -> Result<&Variable<'a>, Ct2Error> {
        self.get(name).ok_or_else(|| Ct2Error::Invalid(format!("missing variable {name}")))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        if n > self.left() {
            return Err(Ct2Error::Truncated { what, offset: self.pos, needed: n, left: self.left() });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let len = usize::from(self.u16(what)?);
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| Ct2Error::Invalid(format!("{what} is not UTF-8")))
    }
}

/// Writes model.bin files; the tests build synthetic models with it.
#[derive(Default)]
pub struct Ct2Writer {
    spec: String,
    variables: Vec<(String, Vec<u32>, u8, Vec<u8>)>,
    aliases: Vec<(String, String)>,
}

impl Ct2Writer {
    pub fn new(spec: &str) -> Ct2Writer {
        Ct2Writer { spec: spec.to_string(), ..Ct2Writer::default() }
    }

    /// A float16 tensor from f32 values.
    pub fn f16(&mut self, name: &str, dims: &[u32], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|v| half::f16::from_f32(*v).to_le_bytes()).collect();
        self.variables.push((name.to_string(), dims.to_vec(), 4, data));
        self
    }

    pub fn f32(&mut self, name: &str, dims: &[u32], values: &[f32]) -> &mut Self {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.variables.push((name.to_string(), dims.to_vec(), 0, data));
        self
    }

    pub fn i16_scalar(&mut self, name: &str, value: i16) -> &mut Self {
        self.variables.push((name.to_string(), Vec::new(), 2, value.to_le_bytes().to_vec()));
        self
    }

    pub fn alias(&mut self, alias: &str, target: &str) -> &mut Self {
        self.aliases.push((alias.to_string(), target.to_string()));
        self
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            let len = u16::try_from(s.len() + 1).unwrap_or(u16::MAX);
            out.extend(len.to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend(SUPPORTED_VERSION.to_le_bytes());
        string(&mut out, &self.spec);
        out.extend(3u32.to_le_bytes());
        out.extend((self.variables.len() as u32).to_le_bytes());
        for (name, dims, dtype, data) in &self.variables {
            string(&mut out, name);
            out.push(dims.len() as u8);
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.push(*dtype);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out.extend((self.aliases.len() as u32).to_le_bytes());
        for (a, t) in &self.aliases {
            string(&mut out, a);
            string(&mut out, t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = Ct2Writer::new("WhisperSpec");
        w.f16("a/weight", &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .f32("a/bias", &[2], &[0.5, -0.5])
            .i16_scalar("a/num_heads", 6)
            .alias("b/weight", "a/weight");
        w.to_bytes()
    }

    #[test]
    fn reads_what_the_writer_wrote() {
        let bytes = sample();
        let m = Ct2Model::parse(&bytes).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.variables.len(), 3);
        let w = m.require("a/weight").unwrap();
        assert_eq!(w.dims, vec![2, 3]);
        assert_eq!(w.dtype, DType::F16);
        assert_eq!(w.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(m.require("a/bias").unwrap().to_f32().unwrap(), vec![0.5, -0.5]);
        assert_eq!(m.require("a/num_heads").unwrap().as_integer(), Some(6));
        assert_eq!(m.aliases, vec![("b/weight".to_string(), "a/weight".to_string())]);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = sample();
        // Cutting inside the alias table is the one place a shorter file can still be
        // complete (no aliases at all), so only cuts before the table must fail.
        let alias_table = bytes.len() - (4 + 2 + 9 + 2 + 9);
        for cut in 0..alias_table {
            assert!(Ct2Model::parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
        for cut in alias_table + 1..bytes.len() {
            assert!(Ct2Model::parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
    }

    #[test]
    fn hostile_lengths_are_rejected() {
        let mut bytes = sample();
        // The variable count sits after version (4), spec (2 + 12) and revision (4).
        bytes[22..26].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Ct2Model::parse(&bytes), Err(Ct2Error::Invalid(_))));
        let mut bytes = sample();
        bytes[0] = 5;
        assert_eq!(Ct2Model::parse(&bytes).unwrap_err(), Ct2Error::Version(5));
        // Flip every byte in turn: whatever comes out, nothing panics.
        let base = sample();
        for i in 0..base.len() {
            let mut b = base.clone();
            b[i] ^= 0xff;
            let _ = Ct2Model::parse(&b);
        }
    }
}
