// What `quantize` checks before writing OUT, so that it never harms its input.
#pragma once

#include <string>

#include "mxmoe/safetensors.hpp"

namespace mxmoe::checkpoint {

// Refuses (mxmoe::Error naming OUT and what it would harm) an output that
//  - is one of the input's files, its index or its config.json: compared by device and inode, so a
//    symlink, hard link or "./x" spelling of an input is caught too (even with `overwrite`);
//  - is a directory, a pipe or anything but a regular file;
//  - would change what the input folder holds as a model: a .safetensors written into a folder read
//    without an index (opened as a folder, or holding a config.json) would be loaded with the model
//    next time, and an OUT named model.safetensors.index.json would become its index;
//  - exists, unless `overwrite`.
void check_output_spares_input(const Checkpoint& in, const std::string& out_path, bool overwrite);

}  // namespace mxmoe::checkpoint
