"""What the CLI installs into a Lightning Trainer: callbacks (checkpoints, predictions, tokenizer files), progress
(progress lines, speed, best score), figures (attention maps, masked predictions, retrieval examples), safe stopping, atomic checkpoint writes,
the run directory (its lock, last/best resolution, metrics files) and the one-line error messages. Above the tasks
(it may read a task's checkpoint metadata), below the commands."""
