//! Output for humans (tables, colour on terminals) and machines (`--output json`).

use std::io::IsTerminal;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{Cell, Color, ContentArrangement, Table};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// One titled table of a [`Output::print_sections`] view.
pub struct Section<'a> {
    pub title: &'a str,
    pub headers: &'a [&'a str],
    pub rows: Vec<Vec<String>>,
}

pub struct Output {
    pub format: Format,
    colour: bool,
}

impl Output {
    pub fn new(format: Format) -> Output {
        let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Output { format, colour }
    }

    /// Prints `raw` (the API answer) as JSON, or `rows` under `headers` as a table.
    pub fn print(&self, raw: &Value, headers: &[&str], rows: Vec<Vec<String>>) {
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(raw).unwrap_or_default()),
            Format::Table => self.table(headers, rows),
        }
    }

    /// Prints `raw` as JSON, or each section as a table under its title: a view of one
    /// resource made of several lists (a service, its deployments, its events).
    pub fn print_sections(&self, raw: &Value, sections: Vec<Section>) {
        match self.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(raw).unwrap_or_default()),
            Format::Table => {
                for (i, section) in sections.into_iter().enumerate() {
                    if i > 0 {
                        println!();
                    }
                    println!("{}", section.title);
                    self.table(section.headers, section.rows);
                }
            }
        }
    }

    fn table(&self, headers: &[&str], rows: Vec<Vec<String>>) {
        println!("{}", self.render(headers, rows));
    }

    fn render(&self, headers: &[&str], rows: Vec<Vec<String>>) -> String {
        if rows.is_empty() {
            return "(none)".into();
        }
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
        table.set_header(headers.iter().map(|h| Cell::new(h).fg(Color::Cyan)).collect::<Vec<_>>());
        for row in rows {
            table.add_row(row.into_iter().map(|c| self.status_cell(c)).collect::<Vec<_>>());
        }
        if !self.colour {
            table.force_no_tty();
        }
        table.to_string()
    }

    /// A state coloured by what it means, whoever names it: ECS in capitals, ELB's target
    /// and load-balancer states in lower case (`healthy`, `initial`, `active`).
    fn status_cell(&self, text: String) -> Cell {
        let colour = match text.to_ascii_uppercase().as_str() {
            "ACTIVE" | "RUNNING" | "HEALTHY" | "COMPLETED" | "ISSUED" => Some(Color::Green),
            "INACTIVE" | "STOPPED" | "DELETE_IN_PROGRESS" | "UNUSED" | "UNAVAILABLE" => Some(Color::DarkGrey),
            "UNHEALTHY" | "FAILED" | "EXPIRED" => Some(Color::Red),
            "DRAINING" | "IN_PROGRESS" | "INITIAL" => Some(Color::Yellow),
            _ => None,
        };
        match colour {
            Some(c) if self.colour => Cell::new(text).fg(c),
            _ => Cell::new(text),
        }
    }
}

/// `value[key]` as display text; `-` when absent.
pub fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `value[key]`, an AWS JSON timestamp (epoch seconds), as RFC 3339 UTC; `-` when absent.
pub fn time(value: &Value, key: &str) -> String {
    match value[key].as_f64() {
        Some(secs) => flotilla_types::Timestamp((secs * 1000.0).round() as i64).rfc3339(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn states_are_coloured_by_meaning_in_either_case() {
        let coloured = Output { format: Format::Table, colour: true };
        let cell = |state: &str| format!("{:?}", coloured.status_cell(state.to_owned()));
        assert!(cell("healthy").contains("Green") && cell("HEALTHY").contains("Green"), "{}", cell("healthy"));
        assert!(cell("unhealthy").contains("Red"), "{}", cell("unhealthy"));
        assert!(cell("initial").contains("Yellow") && cell("draining").contains("Yellow"));
        assert!(cell("web").contains("fg: None"), "{}", cell("web"));
        let plain = Output { format: Format::Table, colour: false };
        assert!(!format!("{:?}", plain.status_cell("healthy".into())).contains("Green"));
        assert_eq!(plain.render(&["A"], Vec::new()), "(none)");
    }

    #[test]
    fn time_reads_epoch_seconds_and_marks_absence() {
        let v = json!({ "createdAt": 1_764_469_024.123, "text": "x" });
        assert_eq!(time(&v, "createdAt"), "2025-11-30T02:17:04.123Z");
        assert_eq!(time(&v, "updatedAt"), "-");
        assert_eq!(time(&v, "text"), "-");
    }
}
