"""Static knowledge distillation: semantic vectors of neurons, exported to a file, distilled without a teacher."""
