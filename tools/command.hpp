// Subcommands register themselves here, one file each, so adding one touches no other file.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace mxmoe::cli {

// Fills `sub` with the command's options; returns the action to run once parsing succeeded.
// The action returns the process exit status.
using Setup = std::function<std::function<int()>(CLI::App& sub)>;

struct CommandInfo {
  std::string name, description;
  int order;  // position in --help
  Setup setup;
};

std::vector<CommandInfo>& command_registry();

struct RegisterCommand {
  RegisterCommand(std::string name, std::string description, int order, Setup setup) {
    command_registry().push_back({std::move(name), std::move(description), order, std::move(setup)});
  }
};

}  // namespace mxmoe::cli
