//! Word lists that make synthetic clients, campaigns and ads read like an
//! agency's real accounts.

use super::Vertical;

/// First words of client names.
pub(super) const CLIENT_FIRST: &[&str] = &[
    "northwind",
    "bluebird",
    "copper",
    "harbor",
    "summit",
    "evergreen",
    "juniper",
    "lakeside",
    "redwood",
    "silverline",
    "maple",
    "brightwater",
    "foxglove",
    "ironwood",
    "meadow",
    "oakridge",
    "pinecrest",
    "saltwater",
    "tidewater",
    "wildflower",
    "goldfinch",
    "highland",
    "cedar",
    "willow",
    "stonebridge",
    "riverbend",
    "amber",
    "coastal",
    "driftwood",
    "fernhill",
    "granite",
    "hazel",
    "kestrel",
    "lumen",
    "marigold",
    "nimbus",
    "orchard",
    "prairie",
    "quill",
    "sable",
];

/// Second words of client names, with the business they suggest.
pub(super) const CLIENT_SECOND: &[(&str, Vertical)] = &[
    ("outfitters", Vertical::Outdoor),
    ("trail-co", Vertical::Outdoor),
    ("gear", Vertical::Outdoor),
    ("apparel", Vertical::Apparel),
    ("threads", Vertical::Apparel),
    ("denim", Vertical::Apparel),
    ("footwear", Vertical::Apparel),
    ("home", Vertical::Home),
    ("living", Vertical::Home),
    ("furniture", Vertical::Home),
    ("candle-co", Vertical::Home),
    ("skincare", Vertical::Beauty),
    ("botanicals", Vertical::Beauty),
    ("cosmetics", Vertical::Beauty),
    ("coffee-co", Vertical::Food),
    ("pantry", Vertical::Food),
    ("tea-house", Vertical::Food),
    ("pet-supply", Vertical::Pets),
    ("paws", Vertical::Pets),
    ("software", Vertical::B2b),
    ("analytics", Vertical::B2b),
    ("office-supply", Vertical::B2b),
    ("logistics", Vertical::B2b),
    ("labs", Vertical::B2b),
];

/// Product themes per vertical: ad group themes, search keywords and ad
/// copy angles.
pub(super) fn themes(vertical: Vertical) -> &'static [&'static str] {
    match vertical {
        Vertical::Outdoor => &[
            "Hiking Boots",
            "Rain Jackets",
            "Backpacks",
            "Camping Tents",
            "Trail Running",
            "Base Layers",
        ],
        Vertical::Apparel => &[
            "Womens Dresses",
            "Mens Shirts",
            "Denim",
            "Sneakers",
            "Outerwear",
            "Basics",
        ],
        Vertical::Home => &[
            "Sofas",
            "Bedding",
            "Lighting",
            "Rugs",
            "Scented Candles",
            "Kitchenware",
        ],
        Vertical::Beauty => &[
            "Vitamin C Serum",
            "Moisturizer",
            "Sunscreen",
            "Cleanser",
            "Night Cream",
            "Lip Care",
        ],
        Vertical::Food => &[
            "Whole Bean Coffee",
            "Subscriptions",
            "Gift Boxes",
            "Loose Leaf Tea",
            "Cold Brew",
            "Espresso",
        ],
        Vertical::Pets => &[
            "Dog Food",
            "Cat Treats",
            "Dog Beds",
            "Chew Toys",
            "Grooming",
            "Subscriptions",
        ],
        Vertical::B2b => &[
            "Demo Request",
            "Free Trial",
            "Pricing",
            "Integrations",
            "Case Studies",
            "Bulk Orders",
        ],
    }
}

/// Creative angles for social ads.
pub(super) const HOOKS: &[&str] = &[
    "Problem Solution",
    "Founder Story",
    "Testimonial",
    "Unboxing",
    "Before After",
    "Social Proof",
    "Limited Offer",
    "How To",
];

/// First names for synthetic customers (their e-mails are hashed, never stored).
pub(super) const FIRST_NAMES: &[&str] = &[
    "olivia", "liam", "emma", "noah", "ava", "oliver", "sophia", "elijah", "mia", "james",
    "amelia", "lucas", "harper", "mateo", "evelyn", "leo", "chloe", "jack", "zoe", "henry", "nora",
    "theo", "lily", "aiden", "grace", "samuel", "hannah", "isaac", "layla", "ethan",
];

/// Last names for synthetic customers.
pub(super) const LAST_NAMES: &[&str] = &[
    "smith", "johnson", "williams", "brown", "jones", "garcia", "miller", "davis", "martin",
    "lopez", "wilson", "anderson", "taylor", "thomas", "moore", "jackson", "white", "harris",
    "clark", "lewis", "walker", "young", "allen", "king", "wright", "scott", "green", "baker",
    "adams", "nelson",
];

/// E-mail domains for synthetic customers.
pub(super) const EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "icloud.com",
    "hotmail.com",
    "proton.me",
];

/// Title-cases a slug: `northwind-outfitters` → `Northwind Outfitters`.
pub(super) fn title_case(slug: &str) -> String {
    slug.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lowercase `[a-z0-9-]` slug of a display name, as agencies put campaign
/// names into `utm_campaign`: `Brand | Search | US` → `brand-search-us`,
/// `Prospecting - Lookalike 1%` → `prospecting-lookalike-1pct`.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending_dash = false;
    for ch in name.chars() {
        let piece: Option<&str> = match ch {
            '%' => Some("pct"),
            '+' => Some("plus"),
            '&' => Some("and"),
            _ => None,
        };
        if let Some(piece) = piece {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push_str(piece);
        } else if ch.is_ascii_alphanumeric() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(ch.to_ascii_lowercase());
        } else {
            pending_dash = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_read_like_agency_utms() {
        assert_eq!(slugify("Brand | Search | US"), "brand-search-us");
        assert_eq!(
            slugify("Prospecting - Lookalike 1%"),
            "prospecting-lookalike-1pct"
        );
        assert_eq!(slugify("ASC+ | Evergreen"), "ascplus-evergreen");
        assert_eq!(title_case("northwind-outfitters"), "Northwind Outfitters");
    }

    #[test]
    fn client_words_are_slug_safe() {
        for w in CLIENT_FIRST
            .iter()
            .chain(CLIENT_SECOND.iter().map(|(w, _)| w))
        {
            assert!(
                w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{w}"
            );
        }
    }
}
