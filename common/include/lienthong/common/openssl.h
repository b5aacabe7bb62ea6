// Small owners and helpers for OpenSSL objects, shared by the modules that
// call the crypto library directly (sealing, the audit chain, signing).
#ifndef LIENTHONG_COMMON_OPENSSL_H_
#define LIENTHONG_COMMON_OPENSSL_H_

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace lienthong::openssl {

template <typename T, void (*F)(T*)>
struct Deleter {
  void operator()(T* p) const { F(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO, BIO_free_all>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509, X509_free>>;
using Pkey = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY, EVP_PKEY_free>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, Deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using Store = std::unique_ptr<X509_STORE, Deleter<X509_STORE, X509_STORE_free>>;
using StoreCtx = std::unique_ptr<X509_STORE_CTX,
                                 Deleter<X509_STORE_CTX, X509_STORE_CTX_free>>;

// The crypto library's reason for the last failure, and clears the queue.
inline std::string Reason() {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

// A read-only BIO over `s`, which must outlive it.
inline Bio MemBio(absl::string_view s) {
  return Bio(BIO_new_mem_buf(s.data(), static_cast<int>(s.size())));
}

// A certificate store holding every certificate of `pem`; `*count` says
// how many (0: none, the PEM held no certificate).
inline Store TrustStore(absl::string_view pem, int* count) {
  Store store(X509_STORE_new());
  Bio bio = MemBio(pem);
  *count = 0;
  while (X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    X509_STORE_add_cert(store.get(), ca);
    X509_free(ca);
    ++*count;
  }
  ERR_clear_error();
  return store;
}

}  // namespace lienthong::openssl

#endif  // LIENTHONG_COMMON_OPENSSL_H_
