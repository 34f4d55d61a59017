// heapledger benchmark workload: a mid-size C++ translation unit for `cc1plus -O2` (the compiler proper, run
// under each tool). It only has to be deterministic, valid C++17 and take ~1-2 s to compile at -O2: heavy
// standard headers plus a few dozen distinct template instantiations, so the compiler allocates a lot of
// small, short-lived GC and obstack memory through malloc.
#include <algorithm>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

namespace bench {

template <typename K, typename V>
struct Table {
    std::map<K, V> ordered;
    std::unordered_map<K, std::vector<V>> buckets;

    void add(const K &k, const V &v) {
        ordered[k] = v;
        buckets[k].push_back(v);
    }
    std::optional<V> find(const K &k) const {
        auto it = ordered.find(k);
        if (it == ordered.end()) return std::nullopt;
        return it->second;
    }
    template <typename F>
    std::vector<V> select(F pred) const {
        std::vector<V> out;
        for (const auto &kv : ordered)
            if (pred(kv.first, kv.second)) out.push_back(kv.second);
        std::sort(out.begin(), out.end());
        return out;
    }
    std::string dump() const {
        std::ostringstream os;
        for (const auto &kv : ordered) os << kv.first << '=' << kv.second << ';';
        return os.str();
    }
};

template <int N>
struct Unrolled {
    // sum of v[i..i+N) (clamped to v.size()), expanded into N nested instantiations
    template <typename T>
    static T sum(const std::vector<T> &v, std::size_t i) {
        return i < v.size() ? v[i] + Unrolled<N - 1>::template sum<T>(v, i + 1) : T{};
    }
    template <typename T>
    static T fold(const std::vector<T> &v) {
        T acc{};
        for (std::size_t i = 0; i < v.size(); i += N) acc = acc + sum<T>(v, i);
        return acc;
    }
};
template <>
struct Unrolled<0> {
    template <typename T>
    static T sum(const std::vector<T> &, std::size_t) { return T{}; }
};

using Value = std::variant<long, double, std::string, std::vector<int>>;

struct Printer {
    std::ostream &os;
    void operator()(long v) const { os << "long:" << v; }
    void operator()(double v) const { os << "double:" << v; }
    void operator()(const std::string &v) const { os << "string:" << v; }
    void operator()(const std::vector<int> &v) const { os << "vec:" << std::accumulate(v.begin(), v.end(), 0); }
};

template <typename K, typename V>
std::string exercise(int seed) {
    Table<K, V> t;
    for (int i = 0; i < 100; ++i) {
        K k{};
        V v{};
        if constexpr (std::is_same_v<K, std::string>) k = "k" + std::to_string(i * seed);
        else k = static_cast<K>(i * seed);
        if constexpr (std::is_same_v<V, std::string>) v = std::to_string(i);
        else v = static_cast<V>(i);
        t.add(k, v);
    }
    auto sel = t.select([seed](const K &, const V &v) {
        if constexpr (std::is_same_v<V, std::string>) return v.size() % 2 == static_cast<std::size_t>(seed % 2);
        else return static_cast<long>(v) % 3 == seed % 3;
    });
    std::ostringstream os;
    os << t.dump() << sel.size();
    if (auto f = t.find(K{})) os << '!';
    return os.str();
}

}  // namespace bench

int main(int argc, char **argv) {
    using namespace bench;
    int seed = argc;
    std::vector<std::string> out;
    out.push_back(exercise<std::string, std::string>(seed));
    std::vector<Value> values{1L, 2.5, std::string("three"), std::vector<int>{1, 2, 3}};
    for (const auto &v : values) std::visit(Printer{std::cout}, v);
    std::vector<long> nums(1000);
    std::iota(nums.begin(), nums.end(), 0L);
    std::cout << Unrolled<8>::fold(nums) << '\n';
    if (argc > 1) std::cout << argv[1];
    std::set<std::tuple<int, double>> tuples;
    for (int i = 0; i < 10; ++i) tuples.emplace(i, i * 0.5);
    std::function<long(long)> fib = [&](long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); };
    std::cout << fib(seed + 10) << tuples.size() << out.size() << '\n';
    auto shared = std::make_shared<Table<std::string, std::string>>();
    shared->add("x", "y");
    std::unique_ptr<Table<int, int>> uniq(new Table<int, int>());
    uniq->add(1, 2);
    std::cout << shared->dump() << uniq->dump() << '\n';
    return 0;
}
