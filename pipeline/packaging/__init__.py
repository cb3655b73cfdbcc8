"""Making a built model folder Foundry Local-ready: prompt templates, metadata, file layout."""
