// Result<T, E>: a value or an error enum, for the data path (no exceptions, no allocation on error).
//
// GCC 12 has no std::expected; this is the small subset we need. E is expected to be a cheap
// enum; T may be any movable type (often a view that aliases a caller-owned buffer).
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

namespace derpd {

template <typename E>
struct Err {
  E error;
};
template <typename E>
Err(E) -> Err<E>;

template <typename T, typename E>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Err<E> e) : v_(std::in_place_index<1>, e.error) {}          // NOLINT: implicit by design

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & {
    assert(ok());
    return *std::get_if<0>(&v_);
  }
  const T& value() const& {
    assert(ok());
    return *std::get_if<0>(&v_);
  }
  T&& value() && {
    assert(ok());
    return std::move(*std::get_if<0>(&v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  E error() const {
    assert(!ok());
    return *std::get_if<1>(&v_);
  }

 private:
  std::variant<T, E> v_;
};

// Result<void, E>: success or an error.
template <typename E>
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Err<E> e) : err_(e.error), failed_(true) {}  // NOLINT: implicit by design
  bool ok() const { return !failed_; }
  explicit operator bool() const { return ok(); }
  E error() const {
    assert(failed_);
    return err_;
  }

 private:
  E err_{};
  bool failed_ = false;
};

}  // namespace derpd
