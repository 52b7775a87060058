// A build without CUDA has no NCCL either: its ParallelMoeLayer is the no-NCCL one. This folder is
// the only one of src/layer/ such a build compiles, hence the include of the one definition.
#include "layer/parallel_moe_layer_no_nccl.cpp"
