// A clean C++ program for the CI gate's end-to-end tests: iostream, strings, containers, an exception, a
// locale and threads. It must pass the default gate out of the box.
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

int main() {
    std::vector<std::string> words{"alpha", "a string long enough to live on the heap, not in the SSO buffer"};
    std::map<std::string, std::unique_ptr<int>> m;
    m["x"] = std::make_unique<int>(3);
    try {
        throw std::runtime_error("an exception message long enough to be allocated on the heap");
    } catch (const std::exception &e) {
        words.push_back(e.what());
    }
    std::vector<std::thread> threads;
    for (int i = 0; i < 3; i++) {
        threads.emplace_back([i] {
            std::ostringstream out;
            out << "thread " << i << " " << 3.25 * i;
            volatile std::size_t n = out.str().size();
            (void)n;
        });
    }
    for (auto &t : threads) {
        t.join();
    }
    std::cout << words.size() + m.size() << std::endl;
    return 0;
}
