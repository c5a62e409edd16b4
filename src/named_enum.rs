//! Fieldless enums that the CLI, the infotext and the grid axes spell by one name per variant
//! (samplers, spacings, noise streams, precisions, LoRA modes). One macro gives each the same
//! surface, so a new variant is named in one place and parses the same way everywhere.

/// Implements, for an enum already declared with the listed variants: `ALL` (in the listed order,
/// which is also the order of `--help` and of the "valid" lists in errors), `name()`, `Display`,
/// clap's `ValueEnum` (so the binary's options take these names) and a `FromStr` for the library's
/// own parsing (infotext, grid axes) that fails with `Error::invalid(op, unknown(s))`.
macro_rules! named_enum {
    (
        $ty:ident, op = $op:literal, unknown = |$s:ident| $msg:expr,
        { $($variant:ident => $name:literal),+ $(,)? }
    ) => {
        impl $ty {
            pub const ALL: [$ty; [$($name),+].len()] = [$($ty::$variant),+];

            pub fn name(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl ::clap::ValueEnum for $ty {
            fn value_variants<'a>() -> &'a [Self] {
                &$ty::ALL
            }

            fn to_possible_value(&self) -> Option<::clap::builder::PossibleValue> {
                Some(::clap::builder::PossibleValue::new(self.name()))
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::Error;
            fn from_str($s: &str) -> $crate::Result<Self> {
                <$ty as ::clap::ValueEnum>::from_str($s, false).map_err(|_| $crate::Error::invalid($op, $msg))
            }
        }
    };
}

pub(crate) use named_enum;
