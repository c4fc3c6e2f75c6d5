//! Parameter counts and adapter listing for logs.

use std::fmt;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::generator::Generator;

/// Total and trainable float parameters of a module.
///
/// Trainable means the parameter's tensor requires a gradient, which only an autodiff backend
/// records: count the model the optimiser trains (on a plain backend `trainable` is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParamCount {
    /// Every float parameter element.
    pub total: usize,
    /// Elements of parameters that require a gradient.
    pub trainable: usize,
}

struct Counter(ParamCount);

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let n = param.shape().num_elements();
        self.0.total += n;
        if param.is_require_grad() {
            self.0.trainable += n;
        }
    }
}

impl ParamCount {
    /// Counts the float parameters of `module`.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut c = Counter(Self::default());
        module.visit(&mut c);
        c.0
    }

    /// `trainable / total` in percent (0 for an empty module).
    pub fn trainable_percent(&self) -> f64 {
        if self.total == 0 { 0.0 } else { 100.0 * self.trainable as f64 / self.total as f64 }
    }
}

/// `1234567` → `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl fmt::Display for ParamCount {
    /// Two lines: `Total parameters: 1,234,567` and `Trainable parameters: 12,345 (1.00 %)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Total parameters: {}", thousands(self.total))?;
        write!(f, "Trainable parameters: {} ({:.2} %)", thousands(self.trainable), self.trainable_percent())
    }
}

/// The dotted names of the generator's linear layers that carry a LoRA adapter, in module order.
pub fn lora_adapter_names<B: Backend>(generator: &Generator<B>) -> Vec<String> {
    generator.linears().into_iter().filter(|l| l.has_adapter()).map(|l| l.name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_two_formatted_lines() {
        let c = ParamCount { total: 1_234_567, trainable: 12_345 };
        assert_eq!(c.to_string(), "Total parameters: 1,234,567\nTrainable parameters: 12,345 (1.00 %)");
        let c = ParamCount { total: 999, trainable: 999 };
        assert_eq!(c.to_string(), "Total parameters: 999\nTrainable parameters: 999 (100.00 %)");
        let c = ParamCount { total: 1000, trainable: 0 };
        assert_eq!(c.to_string(), "Total parameters: 1,000\nTrainable parameters: 0 (0.00 %)");
        assert_eq!(ParamCount::default().trainable_percent(), 0.0);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(12_345_678_901), "12,345,678,901");
    }
}
