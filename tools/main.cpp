// mxmoe: the command-line tool. The only place that prints. Exit status, for every command:
//   0 success; 1 a check that ran and failed (verify); 2 any usage or input error: option parsing
//   (CLI11's errors, which would otherwise exit 104-114), mxmoe::Error, and allocation failures;
//   3 a bug (any other exception).
#include <algorithm>
#include <iostream>
#include <map>
#include <new>

#include "command.hpp"
#include "mxmoe/checkpoint.hpp"
#include "mxmoe/error.hpp"

namespace mxmoe::cli {
std::vector<CommandInfo>& command_registry() {
  static std::vector<CommandInfo> registry;
  return registry;
}
}  // namespace mxmoe::cli

int main(int argc, char** argv) {
  using namespace mxmoe::cli;
  mxmoe::install_mapped_file_guard();  // a checkpoint that shrinks under us: a named error, exit 2
  CLI::App app{
      "mxmoe: fused Mixture-of-Experts layers with MXFP4 (E2M1 + E8M0/32) expert weights and bf16\n"
      "activations, on NVIDIA Hopper GPUs (sm_90a), with a CPU reference backend everywhere.\n"
      "Run `mxmoe <command> --help` for the options of each command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "mxmoe 0.1.0");
  app.footer("Exit status: 0 success, 1 a check failed (verify), 2 a usage or input error (named on stderr).");

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
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "mxmoe: " << e.what() << "\nRun `mxmoe" << (argc > 1 ? std::string(" ") + argv[1] : std::string())
              << " --help` for the options.\n";
    return 2;
  }
  try {
    for (auto& [sub, action] : actions)
      if (sub->parsed()) return action();
  } catch (const mxmoe::Error& e) {
    std::cerr << "mxmoe: " << e.what() << "\n";
    return 2;
  } catch (const std::bad_alloc&) {
    // Commands size their large buffers up front and name them; this catches what they could not.
    std::cerr << "mxmoe: out of memory: a host allocation failed (std::bad_alloc); try smaller sizes\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "mxmoe: internal error: " << e.what() << "\n";
    return 3;
  }
  return 0;
}
