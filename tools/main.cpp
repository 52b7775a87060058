// mxmoe: the command-line tool. The only place that prints; errors become exit status 2.
#include <algorithm>
#include <iostream>
#include <map>

#include "command.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::cli {
std::vector<CommandInfo>& command_registry() {
  static std::vector<CommandInfo> registry;
  return registry;
}
}  // namespace mxmoe::cli

int main(int argc, char** argv) {
  using namespace mxmoe::cli;
  CLI::App app{
      "mxmoe: fused Mixture-of-Experts layers with MXFP4 (E2M1 + E8M0/32) expert weights and bf16\n"
      "activations, on NVIDIA Hopper GPUs (sm_90a), with a CPU reference backend everywhere.\n"
      "Run `mxmoe <command> --help` for the options of each command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mxmoe 0.1.0");

  auto commands = command_registry();
  std::sort(commands.begin(), commands.end(), [](const auto& a, const auto& b) { return a.order < b.order; });
  std::map<CLI::App*, std::function<int()>> actions;
  for (auto& c : commands) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    actions[sub] = c.setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const mxmoe::Error& e) {
    std::cerr << "mxmoe: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "mxmoe: internal error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
