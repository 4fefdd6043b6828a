"""Stage 1, neural architecture search space and supernet (the README's "Search space" and "Train").

Takes a search space (a preset under `presets/` or a YAML file) and image data; hands on a trained
weight-sharing supernet, its run directory, and plain tf_keras subnets extracted from it:
`search_space` (SearchSpace, SubnetConfig), `supernet` and `supernet_layers` (the low-rank elastic
ViT), `vit_ops` (the ViT math both share), `data`, `training` and `run_dir`, `extract` and the
`subnet_layers` it builds with, and `evaluation` (float accuracy). Training's parts: `data_spec`,
`data_tfds` and `crops` (the data), `train_settings` (the recipes), `augmentation` and
`rand_augment`, `precision`, `distribution` (tf.distribute), `init_from` and `state_dict` (a
pretrained DeiT as the start).
"""
