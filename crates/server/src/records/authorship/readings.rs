//! The home readings a patient may record: which LOINC codes, in which units, and what the
//! server calls them. A reading is named by its code, never by the sender's words: the
//! displays, the text and the unit label a patient sends are replaced by these, so a body
//! weight cannot be labelled "HbA1c" nor its unit "% (lab verified)".

use serde_json::Value;

/// LOINC, the only code system a home reading is coded in.
pub const LOINC: &str = "http://loinc.org";

/// UCUM, the only system a home reading's unit is coded in.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// One kind of home reading: its LOINC code, the display the server stores, and the UCUM
/// units it may be measured in.
pub struct HomeReading {
    /// LOINC code.
    pub code: &'static str,
    /// The standard display.
    pub display: &'static str,
    /// UCUM unit codes it may carry.
    pub units: &'static [&'static str],
}

const fn reading(code: &'static str, display: &'static str, units: &'static [&'static str]) -> HomeReading {
    HomeReading { code, display, units }
}

/// What a patient measures at home. Laboratory panels are not here: those are the care
/// team's.
pub const HOME_READINGS: [HomeReading; 15] = [
    reading("85354-9", "Blood pressure panel with all children optional", &["mm[Hg]"]),
    reading("8480-6", "Systolic blood pressure", &["mm[Hg]"]),
    reading("8462-4", "Diastolic blood pressure", &["mm[Hg]"]),
    reading("8867-4", "Heart rate", &["/min", "{beats}/min"]),
    reading("9279-1", "Respiratory rate", &["/min", "{breaths}/min"]),
    reading("8310-5", "Body temperature", &["Cel", "[degF]"]),
    reading("29463-7", "Body weight", &["kg", "g", "[lb_av]"]),
    reading("8302-2", "Body height", &["cm", "m", "[in_i]"]),
    reading("39156-5", "Body mass index (BMI) [Ratio]", &["kg/m2"]),
    reading("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", &["%"]),
    reading("2708-6", "Oxygen saturation in Arterial blood", &["%"]),
    reading("15074-8", "Glucose [Moles/volume] in Blood", &["mmol/L"]),
    reading("41653-7", "Glucose [Mass/volume] in Capillary blood by Glucometer", &["mg/dL"]),
    reading("55423-8", "Number of steps in unspecified time Pedometer", &["{steps}"]),
    reading("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", &["{score}"]),
];

/// How each UCUM unit a home reading may carry is shown.
const UNIT_LABELS: [(&str, &str); 19] = [
    ("mm[Hg]", "mmHg"),
    ("/min", "/min"),
    ("{beats}/min", "beats/min"),
    ("{breaths}/min", "breaths/min"),
    ("Cel", "°C"),
    ("[degF]", "°F"),
    ("kg", "kg"),
    ("g", "g"),
    ("[lb_av]", "lb"),
    ("cm", "cm"),
    ("m", "m"),
    ("[in_i]", "in"),
    ("kg/m2", "kg/m²"),
    ("%", "%"),
    ("mmol/L", "mmol/L"),
    ("mg/dL", "mg/dL"),
    ("{steps}", "steps"),
    ("{score}", "score"),
    ("1", "1"),
];

/// The elements of a measured value.
const QUANTITY_ELEMENTS: [&str; 5] = ["value", "comparator", "unit", "system", "code"];

/// The home reading a CodeableConcept is coded with: LOINC codings of one reading from
/// [`HOME_READINGS`] only (and perhaps a text, which is replaced).
pub fn coded_as(concept: Option<&Value>) -> Option<&'static HomeReading> {
    let concept = concept?.as_object()?;
    if !concept.keys().all(|k| k == "coding" || k == "text") {
        return None;
    }
    let codings = concept.get("coding")?.as_array()?;
    let mut found: Option<&'static HomeReading> = None;
    for coding in codings {
        let fields = coding.as_object()?;
        if !fields.keys().all(|k| matches!(k.as_str(), "system" | "code" | "display"))
            || fields.get("system")?.as_str()? != LOINC
        {
            return None;
        }
        let code = fields.get("code")?.as_str()?;
        let reading = HOME_READINGS.iter().find(|r| r.code == code)?;
        // Two codings that disagree are two readings in one: refused.
        if found.is_some_and(|f| f.code != reading.code) {
            return None;
        }
        found = Some(reading);
    }
    found
}

/// Whether `quantity` is a plain value in one of `reading`'s UCUM units.
pub fn measures(reading: &HomeReading, quantity: &Value) -> bool {
    let Some(fields) = quantity.as_object() else { return false };
    fields.keys().all(|k| QUANTITY_ELEMENTS.contains(&k.as_str()))
        && fields.get("value").is_some_and(Value::is_number)
        && fields.get("system").and_then(Value::as_str) == Some(UCUM)
        && fields
            .get("code")
            .and_then(Value::as_str)
            .is_some_and(|unit| reading.units.contains(&unit))
}

/// Gives a reading's code its standard display and text, and its value its standard unit
/// label: what the reading is called is its code's to say, not the sender's.
pub fn relabel(concept: Option<&mut Value>, quantity: Option<&mut Value>) {
    let Some(concept) = concept.and_then(Value::as_object_mut) else { return };
    let reading = coded_as(Some(&Value::Object(concept.clone())));
    let Some(reading) = reading else { return };
    for coding in concept.get_mut("coding").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(fields) = coding.as_object_mut() {
            fields.insert("display".into(), reading.display.into());
        }
    }
    if concept.contains_key("text") {
        concept.insert("text".into(), reading.display.into());
    }
    let Some(fields) = quantity.and_then(Value::as_object_mut) else { return };
    let label = fields
        .get("code")
        .and_then(Value::as_str)
        .and_then(|unit| UNIT_LABELS.iter().find(|(code, _)| *code == unit))
        .map(|(_, label)| *label);
    if let Some(label) = label {
        fields.insert("unit".into(), label.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_a_reading_may_carry_has_a_label() {
        for reading in &HOME_READINGS {
            for unit in reading.units {
                assert!(UNIT_LABELS.iter().any(|(code, _)| code == unit), "{} {unit}", reading.code);
            }
        }
    }
}
