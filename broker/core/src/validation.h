// Checks a document as sent by an agency, before anything is stored.
#ifndef LIENTHONG_BROKER_CORE_SRC_VALIDATION_H_
#define LIENTHONG_BROKER_CORE_SRC_VALIDATION_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "lienthong/broker/exchange.h"
#include "lienthong/common/identity.h"
#include "lienthong/v1/document.pb.h"

namespace lienthong::broker {

// OK, or the precise status naming the offending field ("document.<field>").
// Does not check that recipients are known (the exchange does).
absl::Status ValidateNewDocument(const v1::Document& doc,
                                 const Principal& caller,
                                 const ExchangeOptions& options);

// SHA-256 over the body and every attachment's hash: what the sender's
// content is, independent of metadata. Each attachment's `sha256` must
// already be its content's lower-case hex hash (the exchange sets it).
std::string ContentSha256(const v1::Document& doc);

}  // namespace lienthong::broker

#endif  // LIENTHONG_BROKER_CORE_SRC_VALIDATION_H_
