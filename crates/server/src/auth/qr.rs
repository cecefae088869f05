//! QR codes as PNG, for loading a TOTP secret into an authenticator app.

use qrcodegen::{QrCode, QrCodeEcc};

use crate::ServerError;

/// Pixels per QR module, and modules of quiet zone around the code.
const SCALE: usize = 6;
const BORDER: usize = 4;

/// `text` as a black-on-white QR code PNG (8-bit greyscale).
pub fn png(text: &str) -> Result<Vec<u8>, ServerError> {
    let code =
        QrCode::encode_text(text, QrCodeEcc::Medium).map_err(|e| ServerError::Invalid(format!("QR code: {e:?}")))?;
    let modules = usize::try_from(code.size()).unwrap_or(0);
    let side = (modules + 2 * BORDER) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            let (xi, yi) = (i32::try_from(x).unwrap_or(0), i32::try_from(y).unwrap_or(0));
            if code.get_module(xi, yi) {
                for dy in 0..SCALE {
                    let row = ((y + BORDER) * SCALE + dy) * side;
                    let start = row + (x + BORDER) * SCALE;
                    pixels[start..start + SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    let side32 = u32::try_from(side).map_err(|_| ServerError::Invalid("QR code too large".into()))?;
    let mut encoder = png::Encoder::new(&mut out, side32, side32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(|e| ServerError::Invalid(format!("PNG: {e}")))?;
    writer
        .write_image_data(&pixels)
        .map_err(|e| ServerError::Invalid(format!("PNG: {e}")))?;
    writer.finish().map_err(|e| ServerError::Invalid(format!("PNG: {e}")))?;
    Ok(out)
}
