//! CSV and NDJSON rows read through a mapping and converted to messages, as an import
//! does before anything is stored: the shipped example mappings, or a fuzzed one.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use consentry::profiles::import::convert::Converter;
use consentry::profiles::import::mapping::{Format, Mapping};
use consentry::profiles::import::rows::Rows;
use libfuzzer_sys::fuzz_target;

const CRM: &str = include_str!("../../examples/imports/crm.toml");
const POS: &str = include_str!("../../examples/imports/pos.toml");

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    mapping: u8,
    custom: &'a str,
    ndjson: bool,
    file: &'a [u8],
}

fuzz_target!(|input: Input<'_>| {
    let text = match input.mapping % 3 {
        0 => CRM,
        1 => POS,
        _ => input.custom,
    };
    let Ok(mapping) = Mapping::parse(text, common::policies()) else {
        return;
    };
    let format = mapping.format.unwrap_or(if input.ndjson {
        Format::Ndjson
    } else {
        Format::Csv
    });
    let columns = mapping.columns();
    let Ok(mut rows) = Rows::open(input.file, format, mapping.delimiter, &columns) else {
        return;
    };
    let converter = Converter::new(&mapping, &columns, common::now());
    let mut read = 0usize;
    while let Some(next) = rows.next_row() {
        read += 1;
        assert!(read <= input.file.len() + 1, "more rows than bytes");
        if let Ok(Ok(raw)) = next {
            if let Ok(c) = converter.convert(&raw) {
                assert!(!c.messages.is_empty());
            }
        }
    }
});
