//! Output formats for [`crate::analyse::Report`]s. Renderers only format; every decision (grouping, sorting,
//! what counts as a warning) is made in `analyse`.

pub mod json;
pub mod text;
pub mod trend_json;
pub mod trend_svg;
pub mod trend_text;
