//! The demo patient's documents: a discharge letter (plain text), an immunisation record
//! (PDF) and a chest image (PNG),
//! both synthetic and marked as test data, stored through the same path as any upload so
//! their bytes are encrypted at rest and reached only through signed links.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::ServerError;

/// The letter's text. Synthetic: no real person, place or clinician.
const LETTER: &str = "Discharge letter (synthetic test data)

Carekeep demo clinic

Admitted with community-acquired pneumonia, treated with oral antibiotics for five days.
Observations settled within 48 hours; chest image on day three showed clearing.

Follow-up: see your care team in two weeks, sooner if breathless or feverish.
Medication changes: none. Allergies: unchanged.

This letter is part of Carekeep's synthetic demo data.
";

/// A 256×256 greyscale picture that reads as a chest image at a glance: two darker lung
/// fields either side of a bright spine, in a soft vignette. Generated, so no real image
/// (and no real person) is in the repository.
fn chest_png() -> Result<Vec<u8>, ServerError> {
    const SIDE: u32 = 256;
    let mut pixels = Vec::with_capacity((SIDE * SIDE) as usize);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let (fx, fy) = (f64::from(x) / f64::from(SIDE) - 0.5, f64::from(y) / f64::from(SIDE) - 0.5);
            let mut v = 150.0 - 160.0 * (fx * fx + fy * fy);
            for side in [-0.2, 0.2] {
                let (dx, dy) = ((fx - side) / 0.15, (fy + 0.02) / 0.3);
                if dx * dx + dy * dy < 1.0 {
                    v -= 90.0 * (1.0 - (dx * dx + dy * dy));
                }
            }
            if fx.abs() < 0.03 {
                v += 70.0;
            }
            // Ribs: faint bands across the lung fields.
            if (fy * 40.0).sin() > 0.85 && fx.abs() > 0.05 {
                v += 18.0;
            }
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "clamped to 0..=255 first")]
            pixels.push(v.clamp(0.0, 255.0).round() as u8);
        }
    }
    let mut out = Vec::new();
    let fail = |e: png::EncodingError| ServerError::Invalid(format!("demo image: {e}"));
    let mut encoder = png::Encoder::new(&mut out, SIDE, SIDE);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(fail)?;
    writer.write_image_data(&pixels).map_err(fail)?;
    writer.finish().map_err(fail)?;
    Ok(out)
}

/// The immunisation record's lines (synthetic).
const IMMUNISATIONS: &[&str] = &[
    "Immunisation record (synthetic test data)",
    "",
    "Influenza, seasonal - given in the left arm, no reaction.",
    "Tetanus, diphtheria, pertussis (booster) - given, no reaction.",
    "COVID-19 (updated) - given, mild soreness for a day.",
    "",
    "Part of Carekeep's synthetic demo data: no real person.",
];

/// A one-page PDF of `lines` in Helvetica, written by hand (five objects and their
/// cross-reference table): small, valid, and free of anything a PDF could run.
fn text_pdf(lines: &[&str]) -> Vec<u8> {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let mut text = String::from("BT /F1 13 Tf 18 TL 72 770 Td\n");
    for (i, line) in lines.iter().enumerate() {
        let escaped = line.replace('\\', "\\\\").replace('(', "\\(").replace(')', "\\)");
        let size = if i == 0 { 18 } else { 13 };
        let _ = writeln!(text, "/F1 {size} Tf ({escaped}) Tj T*");
    }
    text.push_str("ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>"
            .to_owned(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{text}\nendstream", text.len()),
    ];
    let mut pdf = String::from("%PDF-1.4\n");
    let mut offsets = Vec::new();
    for (n, object) in (1..).zip(&objects) {
        offsets.push(pdf.len());
        let _ = write!(pdf, "{n} 0 obj\n{object}\nendobj\n");
    }
    let xref = pdf.len();
    let _ = write!(pdf, "xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for offset in offsets {
        let _ = writeln!(pdf, "{offset:010} 00000 n ");
    }
    let _ = write!(pdf, "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1);
    pdf.into_bytes()
}

/// The demo documents of `patient`, dated `now`, as `(id, DocumentReference)` pairs whose
/// attachments carry their bytes inline (the server moves them out when storing).
pub fn documents(patient: &str, now: &str) -> Result<Vec<(String, Value)>, ServerError> {
    let document = |code: &str, display: &str, title: &str, content_type: &str, bytes: &[u8]| {
        json!({
            "resourceType": "DocumentReference",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HTEST", "display": "test health data"}]},
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
            "subject": {"reference": format!("Patient/{patient}")},
            "date": now,
            "description": title,
            "content": [{"attachment": {"contentType": content_type, "title": title, "creation": now, "data": STANDARD.encode(bytes)}}],
        })
    };
    Ok(vec![
        (
            super::stable_id(patient, "discharge-letter"),
            document("18842-5", "Discharge summary", "Discharge letter", "text/plain", LETTER.as_bytes()),
        ),
        (
            super::stable_id(patient, "immunisation-record"),
            document(
                "11369-6",
                "History of Immunization",
                "Immunisation record",
                "application/pdf",
                &text_pdf(IMMUNISATIONS),
            ),
        ),
        (
            super::stable_id(patient, "chest-image"),
            document("18748-4", "Diagnostic imaging study", "Chest image", "image/png", &chest_png()?),
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_pdf_has_a_cross_reference_table_that_points_at_its_objects() {
        let pdf = String::from_utf8(super::text_pdf(&["A (bracketed) line", "two"])).unwrap();
        let startxref: usize = pdf
            .split("startxref\n")
            .nth(1)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pdf[startxref..].starts_with("xref\n0 6\n"));
        let table = &pdf[startxref..];
        for (n, line) in (1..=5).zip(table.lines().skip(3)) {
            let offset: usize = line[..10].parse().unwrap();
            assert!(pdf[offset..].starts_with(&format!("{n} 0 obj")), "object {n}");
            assert_eq!(line.len() + 1, 20, "entries are 20 bytes");
        }
        assert!(pdf.contains(r"(A \(bracketed\) line) Tj"));
    }
}
