//! Binary encoding of posteriors for the database: a 6-byte header then little-endian f64s.
//!
//! Header: magic `b"EL"`, format version (1), kind (0 = vector, 1 = packed upper triangle of a
//! symmetric matrix, column by column), J as u16 LE. Decoding checks the length and finiteness,
//! so a damaged row is an error, never a silently wrong posterior.

use nalgebra::{DMatrix, DVector};

const MAGIC: &[u8; 2] = b"EL";
const FORMAT: u8 = 1;
const KIND_VECTOR: u8 = 0;
const KIND_SYMMETRIC: u8 = 1;
const HEADER: usize = 6;

#[derive(Debug, thiserror::Error)]
#[error("corrupt posterior blob: {0}")]
pub struct CodecError(&'static str);

fn header(kind: u8, dim: usize, values: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + 8 * values);
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(kind);
    out.extend_from_slice(&(dim as u16).to_le_bytes());
    out
}

fn read_header(bytes: &[u8], kind: u8) -> Result<usize, CodecError> {
    if bytes.len() < HEADER || &bytes[..2] != MAGIC {
        return Err(CodecError("bad magic"));
    }
    if bytes[2] != FORMAT || bytes[3] != kind {
        return Err(CodecError("unknown format or kind"));
    }
    Ok(u16::from_le_bytes([bytes[4], bytes[5]]) as usize)
}

fn read_values(bytes: &[u8], count: usize) -> Result<Vec<f64>, CodecError> {
    let body = &bytes[HEADER..];
    if body.len() != 8 * count {
        return Err(CodecError("wrong length"));
    }
    let values: Vec<f64> = body
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect();
    if values.iter().any(|v| !v.is_finite()) {
        return Err(CodecError("non-finite value"));
    }
    Ok(values)
}

pub fn encode_vector(v: &DVector<f64>) -> Vec<u8> {
    let mut out = header(KIND_VECTOR, v.len(), v.len());
    v.iter()
        .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
    out
}

pub fn decode_vector(bytes: &[u8]) -> Result<DVector<f64>, CodecError> {
    let dim = read_header(bytes, KIND_VECTOR)?;
    Ok(DVector::from_vec(read_values(bytes, dim)?))
}

/// Encodes the upper triangle of a symmetric matrix: J(J+1)/2 values.
pub fn encode_symmetric(m: &DMatrix<f64>) -> Vec<u8> {
    let j = m.nrows();
    let mut out = header(KIND_SYMMETRIC, j, j * (j + 1) / 2);
    for col in 0..j {
        for row in 0..=col {
            out.extend_from_slice(&m[(row, col)].to_le_bytes());
        }
    }
    out
}

pub fn decode_symmetric(bytes: &[u8]) -> Result<DMatrix<f64>, CodecError> {
    let j = read_header(bytes, KIND_SYMMETRIC)?;
    let values = read_values(bytes, j * (j + 1) / 2)?;
    let mut m = DMatrix::zeros(j, j);
    let mut k = 0;
    for col in 0..j {
        for row in 0..=col {
            m[(row, col)] = values[k];
            m[(col, row)] = values[k];
            k += 1;
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let v = DVector::from_vec(vec![1.5, -2.0, 3.25]);
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        let m = DMatrix::from_row_slice(3, 3, &[2.0, 0.5, 0.1, 0.5, 1.0, -0.3, 0.1, -0.3, 4.0]);
        assert_eq!(decode_symmetric(&encode_symmetric(&m)).unwrap(), m);
        let mut bytes = encode_vector(&v);
        bytes.pop();
        assert!(decode_vector(&bytes).is_err());
        assert!(decode_symmetric(&encode_vector(&v)).is_err());
        let nan = encode_vector(&DVector::from_vec(vec![f64::NAN]));
        assert!(decode_vector(&nan).is_err());
    }
}
