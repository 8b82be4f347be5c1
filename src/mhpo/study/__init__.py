"""Studies: run objectives side by side (`mhpo compare`) and report on saved runs (`mhpo report`)."""
