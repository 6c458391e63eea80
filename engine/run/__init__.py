"""The run directory, shared by training, evaluation, prediction and export.

run_dir (config.json written before step 0, checked on resume), lock (one trainer per
directory), checkpoint (what a checkpoint holds, by name), locate (a run's config and the
checkpoint a name means, without TensorFlow) and restore (a model back from its
checkpoint, exactly or with an error). The trainer writes here and engine.eval reads;
neither imports the other.
"""
