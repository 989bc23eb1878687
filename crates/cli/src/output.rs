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
            Format::Table => {
                if rows.is_empty() {
                    println!("(none)");
                    return;
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
                println!("{table}");
            }
        }
    }

    fn status_cell(&self, text: String) -> Cell {
        let colour = match text.as_str() {
            "ACTIVE" | "RUNNING" | "HEALTHY" => Some(Color::Green),
            "INACTIVE" | "STOPPED" | "DELETE_IN_PROGRESS" => Some(Color::DarkGrey),
            "UNHEALTHY" | "FAILED" => Some(Color::Red),
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
