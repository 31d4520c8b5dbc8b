//! Result types every client can read.
//!
//! DataFusion and the Delta scan hand back dictionary-encoded partition
//! columns and `Utf8View`/`BinaryView` strings; older Flight SQL JDBC and
//! ODBC drivers cannot read those, and the schema a client is promised must
//! be the schema it receives. So every query ends in a projection that casts
//! such columns to their plain equivalents, and the catalog advertises
//! table schemas the same way.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};

/// The plain type a client receives for `data_type`.
pub fn transport_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, value) => transport_type(value),
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::ListView(f) | DataType::List(f) => DataType::List(transport_field(f)),
        DataType::LargeListView(f) | DataType::LargeList(f) => {
            DataType::LargeList(transport_field(f))
        }
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(transport_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(transport_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(transport_field(f), *sorted),
        other => other.clone(),
    }
}

fn transport_field(field: &FieldRef) -> FieldRef {
    Arc::new(Field::new(
        field.name(),
        transport_type(field.data_type()),
        field.is_nullable(),
    ))
}

/// Whether `data_type` is already what a client receives.
pub fn is_transport_type(data_type: &DataType) -> bool {
    transport_type(data_type) == *data_type
}

/// `schema` with every field in its transport type.
pub fn transport_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| {
                Arc::new(
                    Field::new(f.name(), transport_type(f.data_type()), f.is_nullable())
                        .with_metadata(f.metadata().clone()),
                )
            })
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_and_views_become_plain() {
        let dict = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
        assert_eq!(transport_type(&dict), DataType::Utf8);
        assert_eq!(transport_type(&DataType::Utf8View), DataType::Utf8);
        assert_eq!(transport_type(&DataType::BinaryView), DataType::Binary);
        let nested = DataType::List(Arc::new(Field::new("item", DataType::Utf8View, true)));
        assert_eq!(
            transport_type(&nested),
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        assert!(is_transport_type(&DataType::Decimal128(18, 6)));
        assert!(!is_transport_type(&dict));
    }
}
