"""Map building: keyframe selection and the builder shared by the CLI and the live node."""
