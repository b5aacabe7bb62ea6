// Sha256Chain: the SHA-256 it gives is the standard one, whatever the
// pieces, and a chain picked up from a state goes on exactly as the one it
// was taken from: what lets one pass check every chunk of an attachment.
#include "lienthong/common/sha256_chain.h"

#include <string>

#include "gtest/gtest.h"
#include "lienthong/common/sealing.h"

namespace lienthong::sealing {
namespace {

std::string Content(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) % 251);
  return s;
}

TEST(Sha256ChainTest, DigestIsSha256WhateverThePieces) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{63}, size_t{64}, size_t{65},
                   size_t{1000}, size_t{4096 * 3 + 17}}) {
    const std::string content = Content(n);
    Sha256Chain whole;
    whole.Update(content);
    EXPECT_EQ(whole.Digest(), Sha256Raw(content)) << n << " bytes";
    Sha256Chain pieces;
    for (size_t at = 0; at < n; at += 7) pieces.Update(content.substr(at, 7));
    EXPECT_EQ(pieces.Digest(), Sha256Raw(content)) << n << " bytes in 7s";
    EXPECT_EQ(pieces.bytes(), n);
    // Digest leaves the chain going on.
    pieces.Update("x");
    EXPECT_EQ(pieces.Digest(), Sha256Raw(content + "x"));
  }
}

TEST(Sha256ChainTest, ResumedFromAStateGoesOnAsTheOriginal) {
  const std::string content = Content(3 * 4096 + 100);
  Sha256Chain first;
  first.Update(absl::string_view(content).substr(0, 4096));
  const std::string state = first.State();
  ASSERT_EQ(state.size(), Sha256Chain::kStateBytes);
  std::optional<Sha256Chain> resumed = Sha256Chain::Resume(state, 4096);
  ASSERT_TRUE(resumed.has_value());
  EXPECT_EQ(resumed->bytes(), 4096u);
  EXPECT_EQ(resumed->State(), state);
  resumed->Update(absl::string_view(content).substr(4096));
  EXPECT_EQ(resumed->Digest(), Sha256Raw(content));

  // A chunk that differs by one bit leaves another state.
  std::string altered = content.substr(4096, 4096);
  altered[100] ^= 0x01;
  Sha256Chain good = *Sha256Chain::Resume(state, 4096);
  good.Update(absl::string_view(content).substr(4096, 4096));
  Sha256Chain bad = *Sha256Chain::Resume(state, 4096);
  bad.Update(altered);
  EXPECT_NE(good.State(), bad.State());
  // So does the right chunk hashed from the wrong place.
  Sha256Chain moved = *Sha256Chain::Resume(state, 8192);
  moved.Update(absl::string_view(content).substr(4096, 4096));
  EXPECT_NE(moved.Digest(), good.Digest());
}

TEST(Sha256ChainTest, MalformedStatesAreRefused) {
  EXPECT_FALSE(Sha256Chain::Resume(std::string(31, 'a'), 64).has_value());
  EXPECT_FALSE(Sha256Chain::Resume(std::string(32, 'a'), 100).has_value());
  EXPECT_TRUE(Sha256Chain::Resume(std::string(32, 'a'), 128).has_value());
}

}  // namespace
}  // namespace lienthong::sealing
