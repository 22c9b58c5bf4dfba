use dispatch::prelude::*;

#[derive(Default)]
pub struct Audit;

#[library_service]
impl Audit {
    /// A one-way method has no reply to carry a value.
    #[oneway]
    pub async fn record(&self, line: String) -> usize {
        line.len()
    }
    #[oneway]
    pub fn fallible(&self) -> Result<(), String> {
        Ok(())
    }
    #[oneway(fast)]
    pub fn malformed(&self) {}
    #[oneway]
    fn private(&self) {}
}

fn main() {}
