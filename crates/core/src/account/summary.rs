//! A patient's record as a page a person reads — a doctor abroad, a school nurse — written
//! beside the FHIR export. Plain HTML from the cached resources: every value escaped, no
//! script, no remote asset, a Content-Security-Policy that forbids both, styles inline, and
//! printable. Narrative markup from the records is never copied in: only the coded and
//! structured elements, as text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// Text for the page: `<`, `>`, `&`, `"` and `'` escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// What a CodeableConcept says: its text, else its first coding's display, else its code.
fn concept(value: &Value) -> Option<String> {
    let value = match value {
        Value::Array(items) => items.first()?,
        other => other,
    };
    if let Some(text) = value.get("text").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    let coding = value.get("coding")?.as_array()?;
    coding
        .iter()
        .find_map(|c| c.get("display").and_then(Value::as_str).or_else(|| c.get("code")?.as_str()))
        .map(str::to_owned)
}

/// The date part of a FHIR date or dateTime.
fn day(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_str)
        .map(|d| d.get(..10).unwrap_or(d).to_owned())
        .unwrap_or_default()
}

fn quantity(value: &Value) -> Option<String> {
    let number = value.get("value")?.as_f64()?;
    let unit = value
        .get("unit")
        .or_else(|| value.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Some(format!("{number} {unit}").trim().to_owned())
}

fn text_at(value: &Value, pointer: &str) -> Option<String> {
    let found = value.pointer(pointer)?;
    found.as_str().map(str::to_owned).or_else(|| concept(found))
}

/// A table section: a heading, column names, and rows of cells (plain text, escaped here).
struct Section {
    title: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Section {
    fn new(title: &'static str, columns: &'static [&'static str]) -> Self {
        Self { title, columns, rows: Vec::new() }
    }

    fn write(&self, out: &mut String) {
        let _ = write!(out, "<section><h2>{}</h2>", escape(self.title));
        if self.rows.is_empty() {
            out.push_str("<p class=\"none\">None recorded.</p></section>");
            return;
        }
        out.push_str("<table><thead><tr>");
        for c in self.columns {
            let _ = write!(out, "<th scope=\"col\">{}</th>", escape(c));
        }
        out.push_str("</tr></thead><tbody>");
        for row in &self.rows {
            out.push_str("<tr>");
            for cell in row {
                let _ = write!(out, "<td>{}</td>", escape(cell));
            }
            out.push_str("</tr>");
        }
        out.push_str("</tbody></table></section>");
    }
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;color:#1a1a1a;max-width:60rem;margin:2rem auto;padding:0 1rem}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.15rem;border-bottom:2px solid #1f5f8b;padding-bottom:.2rem;margin-top:1.8rem}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #ccc;vertical-align:top}\
th{background:#eef3f7}.none{color:#555}.about{color:#444}footer{margin-top:2rem;color:#444;font-size:.9rem}\
@media print{body{margin:0}h2{break-after:avoid}tr{break-inside:avoid}}";

/// One patient's resources, by type and by reference.
struct Record<'a> {
    resources: &'a [Value],
    by_id: BTreeMap<String, &'a Value>,
}

impl<'a> Record<'a> {
    fn new(resources: &'a [Value]) -> Self {
        let by_id = resources
            .iter()
            .filter_map(|r| Some((format!("{}/{}", r.get("resourceType")?.as_str()?, r.get("id")?.as_str()?), r)))
            .collect();
        Self { resources, by_id }
    }

    fn of(&self, resource_type: &'static str) -> impl Iterator<Item = &'a Value> + 'a {
        self.resources
            .iter()
            .filter(move |r| r.get("resourceType").and_then(Value::as_str) == Some(resource_type))
    }

    fn name(&self) -> String {
        let Some(n) = self.of("Patient").next().and_then(|p| p.pointer("/name/0")) else { return String::new() };
        if let Some(text) = n.get("text").and_then(Value::as_str) {
            return text.to_owned();
        }
        let given: Vec<&str> = n
            .get("given")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let family = n.get("family").and_then(Value::as_str).unwrap_or("");
        format!("{} {family}", given.join(" ")).trim().to_owned()
    }

    fn medication_name(&self, r: &Value) -> Option<String> {
        r.get("medicationCodeableConcept").and_then(concept).or_else(|| {
            let reference = r.pointer("/medicationReference/reference")?.as_str()?;
            self.by_id.get(reference).and_then(|m| m.get("code")).and_then(concept)
        })
    }

    fn allergies(&self) -> Section {
        let mut section = Section::new("Allergies and intolerances", &["Substance", "Reaction", "Severity", "Status"]);
        for a in self.of("AllergyIntolerance") {
            let reactions: Vec<String> = a
                .get("reaction")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| r.get("manifestation").and_then(concept))
                .collect();
            let severity = a
                .pointer("/reaction/0/severity")
                .and_then(Value::as_str)
                .or_else(|| a.get("criticality")?.as_str());
            section.rows.push(vec![
                a.get("code").and_then(concept).unwrap_or_default(),
                reactions.join(", "),
                severity.unwrap_or("").to_owned(),
                text_at(a, "/clinicalStatus").unwrap_or_default(),
            ]);
        }
        section
    }

    fn medications(&self) -> Section {
        let mut section = Section::new("Medications", &["Medication", "Dose", "Status", "Since"]);
        for m in self.of("MedicationRequest").chain(self.of("MedicationStatement")) {
            section.rows.push(vec![
                self.medication_name(m).unwrap_or_default(),
                text_at(m, "/dosageInstruction/0/text")
                    .or_else(|| text_at(m, "/dosage/0/text"))
                    .unwrap_or_default(),
                m.get("status").and_then(Value::as_str).unwrap_or("").to_owned(),
                day(m
                    .get("authoredOn")
                    .or_else(|| m.pointer("/effectivePeriod/start"))
                    .or_else(|| m.get("effectiveDateTime"))),
            ]);
        }
        section
    }

    fn conditions(&self) -> Section {
        let mut section = Section::new("Conditions", &["Condition", "Status", "Since"]);
        for c in self.of("Condition") {
            section.rows.push(vec![
                c.get("code").and_then(concept).unwrap_or_default(),
                text_at(c, "/clinicalStatus").unwrap_or_default(),
                day(c.get("onsetDateTime").or_else(|| c.get("recordedDate"))),
            ]);
        }
        section
    }

    fn immunisations(&self) -> Section {
        let mut section = Section::new("Immunisations", &["Vaccine", "Date", "Lot"]);
        for i in self.of("Immunization") {
            section.rows.push(vec![
                i.get("vaccineCode").and_then(concept).unwrap_or_default(),
                day(i.get("occurrenceDateTime")),
                i.get("lotNumber").and_then(Value::as_str).unwrap_or("").to_owned(),
            ]);
        }
        section
    }

    /// The latest result of each test.
    fn results(&self) -> Section {
        let mut latest: BTreeMap<String, (String, String)> = BTreeMap::new();
        for o in self.of("Observation") {
            let Some(name) = o.get("code").and_then(concept) else { continue };
            let value = o
                .get("valueQuantity")
                .and_then(quantity)
                .or_else(|| o.get("valueCodeableConcept").and_then(concept))
                .or_else(|| o.get("valueString").and_then(Value::as_str).map(str::to_owned));
            let Some(value) = value else { continue };
            let when = day(o.get("effectiveDateTime").or_else(|| o.get("issued")));
            if latest.get(&name).is_none_or(|(seen, _)| *seen < when) {
                latest.insert(name, (when, value));
            }
        }
        let mut section = Section::new("Latest results", &["Test", "Result", "Date"]);
        section.rows = latest
            .into_iter()
            .map(|(name, (when, value))| vec![name, value, when])
            .collect();
        section
    }

    fn visits_and_procedures(&self) -> [Section; 2] {
        let mut visits = Section::new("Visits", &["Visit", "Date"]);
        for e in self.of("Encounter") {
            let kind =
                text_at(e, "/type").or_else(|| e.pointer("/class/display").and_then(Value::as_str).map(str::to_owned));
            visits
                .rows
                .push(vec![kind.unwrap_or_default(), day(e.pointer("/period/start"))]);
        }
        let mut procedures = Section::new("Procedures", &["Procedure", "Date"]);
        for p in self.of("Procedure") {
            procedures.rows.push(vec![
                p.get("code").and_then(concept).unwrap_or_default(),
                day(p.get("performedDateTime").or_else(|| p.pointer("/performedPeriod/start"))),
            ]);
        }
        [visits, procedures]
    }

    fn plans_and_documents(&self) -> [Section; 2] {
        let mut plans = Section::new("Care plans and goals", &["Plan or goal", "Status", "Since"]);
        for c in self.of("CarePlan") {
            plans.rows.push(vec![
                text_at(c, "/category").unwrap_or_else(|| "Care plan".into()),
                c.get("status").and_then(Value::as_str).unwrap_or("").to_owned(),
                day(c.pointer("/period/start")),
            ]);
        }
        for g in self.of("Goal") {
            plans.rows.push(vec![
                g.get("description").and_then(concept).unwrap_or_default(),
                g.get("lifecycleStatus").and_then(Value::as_str).unwrap_or("").to_owned(),
                day(g.get("startDate")),
            ]);
        }
        let mut documents = Section::new("Documents", &["Document", "Date"]);
        for d in self.of("DocumentReference") {
            documents.rows.push(vec![
                d.get("type")
                    .and_then(concept)
                    .or_else(|| text_at(d, "/content/0/attachment/title"))
                    .unwrap_or_default(),
                day(d.get("date")),
            ]);
        }
        [plans, documents]
    }
}

/// The summary page of one patient's `resources` (JSON, the patient's own first), as of
/// `generated` (a date to print).
pub fn summary_html(resources: &[Value], generated: &str) -> String {
    let record = Record::new(resources);
    let name = record.name();
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(out, "<title>Health summary: {}</title><style>{STYLE}</style></head><body>", escape(&name));
    let _ = write!(out, "<header><h1>{}</h1>", escape(&name));
    if let Some(p) = record.of("Patient").next() {
        let born = day(p.get("birthDate"));
        let gender = p.get("gender").and_then(Value::as_str).unwrap_or("");
        let _ = write!(out, "<p class=\"about\">Born {} · {}</p>", escape(&born), escape(gender));
    }
    out.push_str("</header><main>");
    let mut sections =
        vec![record.allergies(), record.medications(), record.conditions(), record.immunisations(), record.results()];
    sections.extend(record.visits_and_procedures());
    sections.extend(record.plans_and_documents());
    for section in &sections {
        section.write(&mut out);
    }
    let _ = write!(
        out,
        "</main><footer>Health summary written by Carekeep on {} from the records on this device. The \
         complete record, in the standard FHIR format, is in the file saved beside this one.</footer></body></html>",
        escape(generated)
    );
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_record_reads_as_sections_and_nothing_in_it_becomes_markup() {
        let records = vec![
            json!({"resourceType": "Patient", "id": "p", "name": [{"given": ["<script>alert(1)</script>"], "family": "O'Neil"}],
                   "birthDate": "1980-02-03", "gender": "female",
                   "text": {"div": "<div><img src=x onerror=alert(1)></div>"}}),
            json!({"resourceType": "AllergyIntolerance", "id": "a", "code": {"text": "Peanuts"},
                   "reaction": [{"manifestation": [{"text": "Hives"}], "severity": "mild"}]}),
            json!({"resourceType": "Medication", "id": "m", "code": {"coding": [{"display": "Metformin 500 mg"}]}}),
            json!({"resourceType": "MedicationRequest", "id": "r", "status": "active", "medicationReference": {"reference": "Medication/m"},
                   "dosageInstruction": [{"text": "1 tablet daily"}], "authoredOn": "2026-01-01T09:00:00Z"}),
            json!({"resourceType": "Immunization", "id": "i", "vaccineCode": {"text": "Influenza"}, "occurrenceDateTime": "2025-10-01", "lotNumber": "LOT-7"}),
            json!({"resourceType": "Observation", "id": "o1", "code": {"text": "HbA1c"}, "effectiveDateTime": "2025-01-01", "valueQuantity": {"value": 7.9, "unit": "%"}}),
            json!({"resourceType": "Observation", "id": "o2", "code": {"text": "HbA1c"}, "effectiveDateTime": "2026-01-01", "valueQuantity": {"value": 6.8, "unit": "%"}}),
        ];
        let page = summary_html(&records, "2026-11-30");
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("default-src 'none'"));
        assert!(!page.contains("<script") && !page.contains("<img") && !page.contains("onerror"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; O&#39;Neil"));
        for shown in ["Peanuts", "Hives", "mild", "Metformin 500 mg", "1 tablet daily", "Influenza", "LOT-7", "6.8 %"] {
            assert!(page.contains(shown), "{shown} missing");
        }
        assert!(!page.contains("7.9 %"), "only the latest result of a test");
        assert!(page.contains("<h2>Conditions</h2><p class=\"none\">None recorded.</p>"));
    }
}
